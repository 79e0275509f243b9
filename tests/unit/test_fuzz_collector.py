"""Fuzzing the collector's pure core (:mod:`app.intake`): any body and any Authorization header get an answer.

A request is taken the way :mod:`app.collector` takes it -- parse the body, check the write key, then read one event
or a batch -- and must end in one of the answers the HTTP API documents: accepted, ``HttpError`` 400/401 with a
reason, or ``InvalidEvent`` (a 400) with a reason. Anything else would be a 500 from the real server.
"""

from __future__ import annotations

import base64
from collections import Counter
from typing import Any

import orjson
from hypothesis import example, given, settings
from hypothesis import strategies as st

from app.events import EVENT_TYPES, MAX_EVENT_BYTES, InvalidEvent
from app.intake import HttpError, basic_user, batch_events, body_limit, check_write_key, parse_body, single_event
from tests.unit.test_fuzz_events import JSONISH, events

EXAMPLES = settings().max_examples  # the profile tests/conftest.py loaded
NOW_MS = 1_772_366_400_000
WRITE_KEYS = ("wk_fuzz", "wk_other")
ENDPOINTS = [None, *sorted(EVENT_TYPES)]


def basic(user: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:".encode()).decode()


HEADERS = st.one_of(
    st.text(max_size=40),
    st.sampled_from(
        ["", "Basic", "Basic ", "basic d2tfZnV6ejo=", "Bearer wk_fuzz", "Basic é", "Basic ====", "Basic wk_fuzz"]
    ),
    st.builds(basic, st.sampled_from([*WRITE_KEYS, "", "wk_fuzz\x00", "WK_FUZZ", "wk_fuzz "]) | st.text(max_size=12)),
    st.builds(lambda raw: "Basic " + base64.b64encode(raw).decode(), st.binary(max_size=24)),
)


def body_bytes(value: Any) -> bytes:
    try:
        return orjson.dumps(value)
    except orjson.JSONEncodeError:
        return b"{"


BODIES = st.one_of(
    st.binary(max_size=100),
    st.builds(body_bytes, events()),
    st.builds(body_bytes, JSONISH),
    st.builds(lambda items: body_bytes({"batch": items}), st.lists(st.one_of(events(), JSONISH), max_size=5)),
    st.builds(
        lambda event, key: body_bytes({**event, "writeKey": key}),
        events(),
        st.sampled_from(WRITE_KEYS) | JSONISH,
    ),
    st.sampled_from(
        [
            b"",
            b"null",
            b'{"batch": {}}',
            b'{"batch": [' + b"{}," * 100 + b"{}]}",
            b'{"batch": [{"type":"track","userId":"u","event":"e","properties":{"blob":"'
            + b"x" * MAX_EVENT_BYTES
            + b'"}}]}',
            b'{"type":"identify","userId":"u","messageId":"m","traits":{"email":' + b"[" * 300 + b"]" * 300 + b"}}",
        ]
    ),
)


@settings(max_examples=EXAMPLES * 3)
@given(body=BODIES, header=HEADERS, endpoint=st.sampled_from(ENDPOINTS))
@example(body=b'{"type":"track","userId":"u","event":"e"}', header="Basic é", endpoint="track")  # was ValueError: 500
@example(  # was accepted, then failed to encode while its email was encrypted: a 500
    body=b'{"type":"identify","userId":"u","messageId":"m","traits":{"email":' + b"[" * 300 + b"]" * 300 + b"}}",
    header=basic("wk_fuzz"),
    endpoint="identify",
)
def test_every_request_is_accepted_or_refused_with_a_reason(
    body: bytes, header: str, endpoint: str | None, fuzz_cases: Counter[str]
) -> None:
    fuzz_cases["collector"] += 1
    assert body_limit(endpoint) >= MAX_EVENT_BYTES
    try:
        payload = parse_body(body)
        check_write_key(header, payload, WRITE_KEYS)
        if endpoint is None:
            accepted, rejected = batch_events(payload, now_ms=NOW_MS)
            assert len(accepted) + len(rejected) == len(payload["batch"])
            assert [r["index"] for r in rejected] == sorted({r["index"] for r in rejected})
            assert all(isinstance(r["message"], str) and r["message"].strip() for r in rejected)
            events_out = accepted
        else:
            events_out = [single_event(payload, event_type=endpoint, now_ms=NOW_MS)]
    except HttpError as error:
        assert error.status in (400, 401, 413) and str(error).strip()
        return
    except InvalidEvent as error:
        assert endpoint is not None and str(error).strip()
        return
    key = basic_user(header) or payload.get("writeKey")
    assert key in WRITE_KEYS, "only a known write key gets events in"
    for event in events_out:
        assert "writeKey" not in event or endpoint is None
        assert orjson.loads(orjson.dumps(event))["messageId"] == event["messageId"]


@settings(max_examples=EXAMPLES * 2)
@given(header=HEADERS)
@example(header="Basic é")
def test_basic_user_never_raises(header: str, fuzz_cases: Counter[str]) -> None:
    fuzz_cases["collector"] += 1
    user = basic_user(header)
    assert user is None or (user and ":" not in user)
