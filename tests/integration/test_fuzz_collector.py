"""Fuzzing the real collector over HTTP: hostile requests get a 200 or a 4xx with a reason; the stream keeps flowing.

One real :class:`DevStack` (broker, Redis, a worker). Hypothesis generates the requests: bodies that are not JSON,
events with wrong types and hostile unicode, oversized events and batches, gzip and deflate bodies (valid, garbled, and
bombs that inflate past the limit), chunked bodies, lying ``Content-Length`` headers, odd content types and every kind
of ``Authorization`` header. Each is sent on its own connection with a timeout, so a hang fails the test. Afterwards
a batch of valid events is still accepted and folded into exactly the profiles the pure fold predicts, and nothing the
collector accepted was dead-lettered by ingest.
"""

from __future__ import annotations

import base64
import contextlib
import gzip
import http.client
import time
import zlib
from collections import Counter
from dataclasses import dataclass
from urllib.parse import urlsplit

import orjson
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from app.devstack import DevStack
from app.events import MAX_BATCH_BYTES, MAX_EVENT_BYTES
from app.simulate import simulate_events
from tables.profile_view import profile_view
from tests.integration.conftest import expected_profiles, fetch_profiles, stable, stats, wait_for
from tests.unit.test_fuzz_collector import BODIES, HEADERS, body_bytes
from tests.unit.test_fuzz_events import events

pytestmark = pytest.mark.integration

#: Hostile requests per run: twice the profile's examples (300 at the CI size).
REQUESTS = 2 * settings().max_examples
ENDPOINTS = ["/v1/track", "/v1/identify", "/v1/page", "/v1/screen", "/v1/group", "/v1/alias", "/v1/batch"]
RESPONSE_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    body: bytes
    headers: tuple[tuple[str, bytes], ...]
    #: ``chunked``: sent with Transfer-Encoding: chunked; ``lying``: declares 1 GB and sends the body.
    framing: str = "plain"


def _big_body(kind: str, size: int) -> bytes:
    if kind == "event":
        return orjson.dumps({"type": "track", "userId": "big", "event": "E", "properties": {"blob": "x" * size}})
    return orjson.dumps({"batch": [{"type": "track", "userId": f"big-{i}", "event": "E"} for i in range(size // 60)]})


def _bomb(size: int) -> bytes:
    """A batch body of ``size`` bytes, almost all whitespace: it gzips to a few KB."""
    return gzip.compress(b'{"batch":[' + b" " * size + b"]}")


@st.composite
def requests(draw: st.DrawFn) -> Request:
    path = draw(st.sampled_from(ENDPOINTS * 6 + ["/v1/tracks", "/v1/batch/", "/v1//track", "/v1/%00"]))
    endpoint_type = path.removeprefix("/v1/")
    # Half the bodies fit their endpoint (mostly valid events, some fields hostile), so the accept path is fuzzed too.
    fitting = events().map(lambda event: {**event, "type": endpoint_type})
    if path == "/v1/batch":
        fitting = st.lists(events(), min_size=1, max_size=5).map(lambda batch: {"batch": batch})
    body = draw(
        st.one_of(
            BODIES,
            st.builds(
                _big_body,
                st.sampled_from(["event", "batch"]),
                st.sampled_from([MAX_EVENT_BYTES - 200, MAX_EVENT_BYTES + 10, MAX_BATCH_BYTES + 10]),
            ),
            st.builds(body_bytes, fitting),
            st.builds(body_bytes, fitting),
        )
    )
    headers: list[tuple[str, bytes]] = []
    authorization = draw(st.integers(0, 9))
    if authorization < 6:
        headers.append(("Authorization", b"Basic <write key>"))
    elif authorization < 9:
        headers.append(("Authorization", _header_bytes(draw(HEADERS))))
    content_type = draw(
        st.sampled_from(
            [
                "application/json",
                "text/plain",
                "",
                "multipart/form-data; boundary=x",
                "application/json; charset=utf-16",
            ]
        )
        | st.text(max_size=20)
    )
    headers.append(("Content-Type", _header_bytes(content_type)))
    encoding = draw(
        st.sampled_from(["", "", "", "", "gzip", "deflate", "gzip-garbled", "bomb", "br", "gzip, gzip", "compress"])
    )
    if encoding == "gzip":
        body = gzip.compress(body)
    elif encoding == "deflate":
        body = zlib.compress(body)
    elif encoding == "bomb":
        body, path = (
            _bomb(draw(st.sampled_from([100_000, MAX_BATCH_BYTES - 100, MAX_BATCH_BYTES + 1, 5_000_000]))),
            "/v1/batch",
        )
    if encoding:
        headers.append(("Content-Encoding", b"gzip" if encoding in ("gzip-garbled", "bomb") else encoding.encode()))
    method = draw(st.sampled_from(["POST"] * 18 + ["GET", "PUT"]))
    return Request(method, path, body, tuple(headers), draw(st.sampled_from(["plain"] * 6 + ["chunked", "lying"])))


def _header_bytes(value: str) -> bytes:
    # http.client refuses line breaks in a header value (they would be header injection, not a hostile value).
    return value.replace("\r", "").replace("\n", "").encode("utf-8", "surrogatepass")


def send(base_url: str, request: Request, write_key: str) -> tuple[int, bytes]:
    """One request on a fresh connection; a response slower than the timeout raises (a hang)."""
    url = urlsplit(base_url)
    connection = http.client.HTTPConnection(url.hostname or "127.0.0.1", url.port, timeout=RESPONSE_TIMEOUT_S)
    key_header = ("Basic " + base64.b64encode(f"{write_key}:".encode()).decode()).encode()
    try:
        connection.putrequest(request.method, request.path, skip_accept_encoding=True)
        for name, value in request.headers:
            connection.putheader(name, key_header if value == b"Basic <write key>" else value)
        if request.framing == "chunked":
            connection.putheader("Transfer-Encoding", "chunked")
        else:
            declared = 10**9 if request.framing == "lying" else len(request.body)
            connection.putheader("Content-Length", str(declared))
        connection.endheaders()
        # The server may answer (413, 404) and close before it has read the whole body: its answer is still there.
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            if request.framing == "chunked":
                half = len(request.body) // 2
                for chunk in (request.body[:half], request.body[half:]):
                    if chunk:
                        connection.send(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                connection.send(b"0\r\n\r\n")
            else:
                connection.send(request.body)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def accepted_count(request: Request, status: int, body: bytes) -> int:
    """How many events the collector says it took from this request."""
    if status != 200 or request.method != "POST":
        return 0
    answer = orjson.loads(body)
    if "accepted" in answer:
        return int(answer["accepted"])
    if request.path != "/v1/batch":
        return 1
    try:
        sent = zlib.decompress(request.body, wbits=47)  # gzip or zlib, whichever it is
    except zlib.error:
        sent = request.body  # sent as it is, whatever Content-Encoding claimed
    return len(orjson.loads(sent)["batch"])


async def test_hostile_requests_get_an_answer_and_the_stream_keeps_flowing(
    stack: DevStack, fuzz_cases: Counter[str]
) -> None:
    answers: Counter[int] = Counter()
    accepted = 0

    # Synchronous on purpose: the stack's broker and worker are other processes, so blocking this loop holds up
    # nothing, and http.client lets a request lie about its framing the way a hostile client would.
    @settings(
        max_examples=REQUESTS,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.large_base_example, HealthCheck.data_too_large],
    )
    @given(request=requests())
    @example(  # was a 500: a non-ASCII Basic credential made base64 raise ValueError
        request=Request("POST", "/v1/track", b'{"userId":"u","event":"E"}', (("Authorization", "Basic é".encode()),))
    )
    @example(  # was a 500: aiohttp's RequestPayloadError for a body that does not inflate escaped the view
        request=Request("POST", "/v1/track", b"\x00\x00", (("Content-Encoding", b"gzip"),))
    )
    @example(  # was a 500: accepted, then its email could not be encoded for encryption
        request=Request(
            "POST",
            "/v1/identify",
            b'{"userId":"u","messageId":"m","traits":{"email":' + b"[" * 300 + b"]" * 300 + b"}}",
            (("Authorization", b"Basic <write key>"),),
        )
    )
    def hostile(request: Request) -> None:
        nonlocal accepted
        fuzz_cases["collector-http"] += 1
        started = time.monotonic()
        status, body = send(stack.http, request, stack.write_key)
        answers[status] += 1
        assert status == 200 or 400 <= status < 500, (
            f"{status} after {time.monotonic() - started:.1f} s: {body[:300]!r}"
        )
        if status != 200:
            assert body.strip(), f"a {status} must say why"
            if body.startswith(b"{"):
                assert orjson.loads(body).get("message", "x").strip(), f"a {status} must say why: {body[:200]!r}"
        accepted += accepted_count(request, status, body)

    hostile()
    print(f"answers by status {dict(sorted(answers.items()))}; {accepted} events accepted")  # shown with -rP
    assert answers[200] > 0 and sum(n for status, n in answers.items() if status >= 400) > 0, answers

    # The stream did not stall: valid events sent now are folded, into exactly the profiles the pure fold predicts.
    valid = [e for e in simulate_events(users=20, events=200, seed=11) if isinstance(e, dict)]
    status, body = send(
        stack.http,
        Request("POST", "/v1/batch", orjson.dumps({"batch": valid}), (("Authorization", b"Basic <write key>"),)),
        stack.write_key,
    )
    assert (status, orjson.loads(body)) == (200, {"success": True})

    async def all_counted() -> bool:
        return (await stats(stack))["events"] >= accepted + len(valid)

    await wait_for(all_counted, timeout=90, what=f"{accepted} fuzzed and {len(valid)} valid events consumed")
    expected = expected_profiles(valid)
    actual = await fetch_profiles(stack, expected)
    now_ms = int(time.time() * 1000)
    mismatched = [
        user
        for user, profile in expected.items()
        if actual[user] is None or stable(actual[user]) != stable(profile_view(profile, now_ms=now_ms))
    ]
    assert mismatched == [], f"{len(mismatched)} profiles differ, e.g. {mismatched[:3]}"
    assert (await stats(stack))["rejected"] == 0, "ingest dead-lettered an event the collector had accepted"
