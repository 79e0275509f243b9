"""Fuzzing the websocket gateway's core: hostile frames from many tabs, and tokens nobody signed.

The hub (:mod:`ws.protocol`) gets arbitrary interleavings of opens, closes, pushes, replays, consent withdrawals and
browser frames (text, binary, oversized, malformed JSON, wrong types, consent frames, acks of unknown ids) from several
users' connections. After every step: nothing raised, only the connection that misbehaved was closed (with a documented
code and a short reason), every other connection is still open, no effect reaches a user it does not belong to, no
replay sends a connection a message of a purpose withdrawn since it opened, and every event
produced passes the worker's validator (the browser is told it is stored). At the end every
open connection still gets a fresh push. Tokens (:mod:`ws.tokens`): any string, and any alteration of a genuine
token, is refused with :class:`TokenError` and one of the documented reasons.
"""

from __future__ import annotations

import string
from collections import Counter
from dataclasses import dataclass
from typing import Any

import orjson
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from app.events import validate
from ws.protocol import (
    CLOSE_MALFORMED,
    CLOSE_RATE_LIMITED,
    CLOSE_TOO_BIG,
    CLOSE_TOO_MANY_CONNECTIONS,
    CLOSE_UNSUPPORTED_DATA,
    MAX_REASON_BYTES,
    Acked,
    Close,
    Effect,
    Hub,
    Produce,
    Send,
)
from ws.tokens import (
    BAD_SIGNATURE,
    EXPIRED,
    MALFORMED,
    TOO_LONG,
    USER_ID_INVALID,
    TokenError,
    issue_token,
    verify_token,
)

EXAMPLES = settings().max_examples  # the profile tests/conftest.py loaded
NOW = 1_772_366_400.0
MAX_FRAME_BYTES = 2_048
USERS = ["alice", "bob", "\u202ecarol", "dave\x00", "ümit😀"]
CLOSE_CODES = {CLOSE_UNSUPPORTED_DATA, CLOSE_TOO_BIG, CLOSE_MALFORMED, CLOSE_RATE_LIMITED}
SECRET = b"fuzz-token-secret-0123456789"
TOKEN_REASONS = {MALFORMED, BAD_SIGNATURE, EXPIRED, USER_ID_INVALID, TOO_LONG}

TEXT = st.one_of(
    st.text(max_size=30),
    st.sampled_from(
        ["", " ", "\x00", "\u202e", "\ufeff", "NaN", "1e999", "ack", "track", "consent", "ping", "é" * 200]
    ),
)
JSONISH = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats(allow_nan=False) | TEXT,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(TEXT, inner, max_size=3),
    max_leaves=10,
)


def dumps(value: Any) -> str:
    return orjson.dumps(value).decode()


@st.composite
def frames(draw: st.DrawFn, known_ids: list[str]) -> str | bytes:
    """One frame as a browser (or an attacker) might send it."""
    kind = draw(st.integers(0, 11))
    if kind == 0:
        return draw(st.binary(max_size=64))
    if kind == 1:
        return draw(st.text(max_size=60))  # mostly not JSON
    if kind == 2:
        return dumps(draw(JSONISH))  # JSON, rarely an object with a known type
    if kind == 3:
        return "x" * (MAX_FRAME_BYTES + draw(st.integers(1, 100)))
    if kind == 4:
        return dumps({"type": "track", "event": "E", "properties": {"blob": "é" * (MAX_FRAME_BYTES // 2)}})
    if kind == 5:
        depth = draw(st.sampled_from([250, 260, 600]))
        return '{"type":"track","event":"E","properties":{"a":' + "[" * depth + "]" * depth + "}}"
    if kind == 6:
        message_id = draw(st.sampled_from(known_ids) | TEXT) if known_ids else draw(TEXT)
        return dumps({"type": "ack", "id": draw(st.just(message_id) | JSONISH)})
    if kind == 7:
        prefs = draw(st.dictionaries(st.sampled_from(["analytics", "marketing", "personalization"]), st.booleans()))
        return dumps({"type": "consent", "categoryPreferences": draw(st.just(prefs) | JSONISH)})
    if kind == 8:
        return dumps({"type": "ping", **draw(st.dictionaries(TEXT, JSONISH, max_size=2))})
    frame: dict[str, Any] = {"type": "track", "event": draw(TEXT | JSONISH)}
    for field in ("properties", "messageId", "timestamp", "userId", "context"):
        if draw(st.booleans()):
            frame[field] = draw(JSONISH | TEXT)
    return dumps(frame)


@dataclass(frozen=True)
class Open:
    user: str


@dataclass(frozen=True)
class Frame:
    pick: int
    data: str | bytes
    after_s: float


@dataclass(frozen=True)
class Push:
    user: str
    message_id: str
    payload: Any


@dataclass(frozen=True)
class Replay:
    pick: int
    #: (message id, the purpose its payload names or ``None``)
    messages: tuple[tuple[str, str | None], ...]


@dataclass(frozen=True)
class Withdraw:
    user: str
    purposes: frozenset[str]


@dataclass(frozen=True)
class Gone:
    pick: int


MESSAGE_IDS = ["m1", "m2", "m3", "shared-id"]
PURPOSES = ["analytics", "personalization", "marketing"]


@st.composite
def steps(draw: st.DrawFn) -> list[Any]:
    made: list[Any] = [Open(user) for user in draw(st.lists(st.sampled_from(USERS), min_size=1, max_size=4))]
    for _ in range(draw(st.integers(1, 30))):
        choice = draw(st.integers(0, 10))
        if choice == 0:
            made.append(Open(draw(st.sampled_from(USERS))))
        elif choice == 1:
            made.append(Push(draw(st.sampled_from(USERS)), draw(st.sampled_from(MESSAGE_IDS)), draw(JSONISH)))
        elif choice == 2:
            purpose = st.none() | st.sampled_from(PURPOSES)
            messages = draw(st.lists(st.tuples(st.sampled_from(MESSAGE_IDS), purpose)))
            made.append(Replay(draw(st.integers(0, 50)), tuple(messages)))
        elif choice == 3:
            made.append(Gone(draw(st.integers(0, 50))))
        elif choice == 4:
            purposes = draw(st.frozensets(st.sampled_from(PURPOSES), min_size=1))
            made.append(Withdraw(draw(st.sampled_from(USERS)), purposes))
        else:
            after = draw(st.sampled_from([0.0, 0.001, 0.5, 5.0, -1.0]))
            made.append(Frame(draw(st.integers(0, 50)), draw(frames(MESSAGE_IDS)), after))
    return made


def check_close(effect: Close) -> None:
    assert effect.code in CLOSE_CODES | {CLOSE_TOO_MANY_CONNECTIONS}
    assert effect.reason.strip(), "a close must say why"
    assert len(effect.reason.encode("utf-8", "surrogatepass")) <= MAX_REASON_BYTES


class Model:
    """What the test knows independently of the hub: which connection belongs to whom, and which are open."""

    def __init__(self) -> None:
        self.hub = Hub(max_frame_bytes=MAX_FRAME_BYTES, max_connections_per_user=3, rate_per_s=20.0, burst=10)
        self.owner: dict[int, str] = {}
        self.open: set[int] = set()
        #: Purposes withdrawn since each connection opened.
        self.withdrawn: dict[int, set[str]] = {}
        self.next_id = 1
        self.now = NOW

    def conn(self, pick: int) -> int:
        """An open connection, or now and then one that is closed or never existed (the shell races the hub)."""
        known = sorted(self.open) or [999]
        return known[pick % len(known)] if pick < 45 else 1_000 + pick

    def snapshot(self) -> dict[str, frozenset[int]]:
        return {user: self.hub.connections(user) for user in USERS}

    def apply(self, step: Any) -> None:
        before = self.snapshot()
        effects: list[Effect]
        if isinstance(step, Open):
            conn_id, self.next_id = self.next_id, self.next_id + 1
            effects = self.hub.open(conn_id, step.user, self.now)
            self.owner[conn_id] = step.user
            if effects:
                [close] = effects
                assert isinstance(close, Close) and close.conn_id == conn_id
                assert close.code == CLOSE_TOO_MANY_CONNECTIONS and len(before[step.user]) == 3
                check_close(close)
            else:
                self.open.add(conn_id)
                self.withdrawn[conn_id] = set()
            assert self.snapshot() == {**before, step.user: before[step.user] | self.open & {conn_id}}
        elif isinstance(step, Push):
            effects = self.hub.push(step.user, step.message_id, step.payload)
            for effect in effects:
                assert isinstance(effect, Send) and self.owner[effect.conn_id] == step.user
                assert effect.conn_id in self.open
                assert orjson.loads(effect.text)["id"] == step.message_id
            assert self.snapshot() == before
        elif isinstance(step, Replay):
            conn_id = self.conn(step.pick)
            pending = [(mid, {"n": 1} if purpose is None else {"consent": purpose}) for mid, purpose in step.messages]
            effects = self.hub.replay(conn_id, pending)
            assert all(isinstance(e, Send) and e.conn_id == conn_id and conn_id in self.open for e in effects)
            for effect in effects:
                assert isinstance(effect, Send)
                purpose = orjson.loads(effect.text)["payload"].get("consent")
                if self.withdrawn[conn_id]:
                    assert purpose is not None and purpose not in self.withdrawn[conn_id], "replayed a withdrawn one"
            assert self.snapshot() == before
        elif isinstance(step, Withdraw):
            effects = self.hub.withdraw(step.user, step.purposes)
            withdrawn = {"type": "withdrawn", "purposes": sorted(step.purposes)}
            assert [(e.conn_id, orjson.loads(e.text)) for e in effects if isinstance(e, Send)] == [
                (conn_id, withdrawn) for conn_id in sorted(before[step.user])
            ]
            for conn_id in before[step.user]:
                self.withdrawn[conn_id] |= step.purposes
            assert self.snapshot() == before
        elif isinstance(step, Gone):
            conn_id = self.conn(step.pick)
            self.hub.closed(conn_id)
            self.open.discard(conn_id)
            effects = []
        else:
            self.frame(step, before)

    def frame(self, step: Frame, before: dict[str, frozenset[int]]) -> None:
        self.now += step.after_s
        conn_id = self.conn(step.pick)
        effects = self.hub.received(conn_id, step.data, self.now)
        if conn_id not in self.open:
            assert effects == [], "frames from a connection the hub does not know are ignored"
            return
        user = self.owner[conn_id]
        for effect in effects:
            if isinstance(effect, (Send, Close)):
                assert effect.conn_id == conn_id, "a frame only ever answers or closes its own connection"
            else:
                assert effect.user_id == user, "a frame acts only for the connection's own user"
            if isinstance(effect, Produce):
                assert effect.event["userId"] == user
                orjson.dumps(effect.event)  # the shell must be able to produce it
                # The browser gets a receipt for it: the worker must not drop it.
                validate(effect.event, now_ms=int(self.now * 1000))
            if isinstance(effect, Acked):
                assert effect.message_id in MESSAGE_IDS
        closes = [effect for effect in effects if isinstance(effect, Close)]
        if closes:
            [close] = closes
            assert effects == [close]
            check_close(close)
            if not isinstance(step.data, str):
                assert close.code == CLOSE_UNSUPPORTED_DATA or close.code == CLOSE_TOO_BIG
            self.open.discard(conn_id)
            expected = {**before, user: before[user] - {conn_id}}
        else:
            assert isinstance(step.data, str) and len(step.data.encode("utf-8", "surrogatepass")) <= MAX_FRAME_BYTES
            expected = before
        assert self.snapshot() == expected, "only the offending connection is closed"


@settings(max_examples=EXAMPLES * 2)
@given(plan=steps())
@example(plan=[Open("alice"), Open("bob"), Frame(0, "\ud800", 0.0), Push("bob", "m1", {"hi": 1})])
@example(plan=[Open("alice"), Frame(0, '{"type":"consent","categoryPreferences":{"marketing":"yes"}}', 0.0)])
@example(plan=[Open("alice"), Open("bob"), Frame(1, '{"type":"ack","id":"unknown"}', 0.0), Push("alice", "m1", 1)])
@example(plan=[Open("alice"), Frame(0, '{"type":"track","event":"E","timestamp":"not a date"}', 0.0)])
def test_the_hub_never_raises_and_a_bad_frame_closes_only_its_own_connection(
    plan: list[Any], fuzz_cases: Counter[str]
) -> None:
    fuzz_cases["ws"] += 1
    model = Model()
    for step in plan:
        model.apply(step)
    # The stream never stalls: every connection still open gets a fresh push, and only its own user's.
    for user in USERS:
        effects = model.hub.push(user, f"final-{user}", {"for": user})
        assert sorted(effect.conn_id for effect in effects if isinstance(effect, Send)) == sorted(
            conn_id for conn_id in model.open if model.owner[conn_id] == user
        )


# -- tokens -----------------------------------------------------------------------------------------------------

B64 = string.ascii_letters + string.digits + "-_"
TOKENISH = st.one_of(
    st.text(max_size=80),
    st.text(alphabet=B64 + ".=", max_size=80),
    st.builds(
        lambda user, expiry, signature: f"v1.{user}.{expiry}.{signature}",
        st.text(alphabet=B64, max_size=20),
        st.text(alphabet=string.digits, min_size=1, max_size=18),
        st.text(alphabet=B64 + "=+/", max_size=50),
    ),
    st.just("v1." + "A" * 2_000 + ".1.A"),
)


@settings(max_examples=EXAMPLES * 2)
@given(token=TOKENISH, now=st.floats(0, 10**17, allow_nan=False))
@example(token="v1.YQ.1.", now=0.0)
@example(token="v1.\u0661.9.AA", now=0.0)
def test_an_unsigned_string_never_verifies(token: str, now: float, fuzz_cases: Counter[str]) -> None:
    fuzz_cases["tokens"] += 1
    with pytest.raises(TokenError) as refused:
        verify_token(SECRET, token, now=now)
    assert refused.value.reason in TOKEN_REASONS


MUTATIONS = st.tuples(
    st.sampled_from(["replace", "delete", "insert", "respell"]), st.integers(0, 400), st.sampled_from(B64 + ".=é\x00")
)


def mutate(token: str, kind: str, index: int, char: str) -> str:
    at = index % len(token)
    if kind == "replace":
        return token[:at] + char + token[at + 1 :]
    if kind == "delete":
        return token[:at] + token[at + 1 :]
    if kind == "insert":
        return token[:at] + char + token[at:]
    # Another spelling of the same signature: base64's last character carries bits that decoding ignores.
    last = B64.index(token[-1]) if token[-1] in B64 else 0
    return token[:-1] + B64[(last & ~0b11) | ((last + 1 + index % 3) & 0b11)]


@settings(max_examples=EXAMPLES * 2)
@given(
    user=st.text(min_size=1, max_size=40).filter(lambda u: not any(c < " " or "\x7f" <= c <= "\x9f" for c in u)),
    expires_in=st.integers(1, 10**6),
    mutation=MUTATIONS,
)
@example(user="alice", expires_in=900, mutation=("respell", 1, "A"))  # was: 3 other spellings of a token verified
def test_an_altered_token_never_verifies(
    user: str, expires_in: int, mutation: tuple[str, int, str], fuzz_cases: Counter[str]
) -> None:
    fuzz_cases["tokens"] += 1
    token = issue_token(SECRET, user, expires_at=int(NOW) + expires_in)
    assert verify_token(SECRET, token, now=NOW) == user
    altered = mutate(token, *mutation)
    if altered == token:
        return
    with pytest.raises(TokenError) as refused:
        verify_token(SECRET, altered, now=NOW)
    assert refused.value.reason in TOKEN_REASONS
