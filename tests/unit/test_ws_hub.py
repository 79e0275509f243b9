"""The websocket hub, with no sockets and no event loop: routing, acks, replay, limits and hostile frames."""

from __future__ import annotations

import json
import random
from typing import Any

import orjson
import pytest

from app.events import validate
from ws.protocol import (
    CLOSE_MALFORMED,
    CLOSE_RATE_LIMITED,
    CLOSE_TOKEN_EXPIRED,
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

ALICE = "alice"
BOB = "bob"
NOW = 1_772_366_400.0
PING = '{"type":"ping"}'


def text(**fields: Any) -> str:
    return orjson.dumps(fields).decode()


def ack(message_id: str) -> str:
    return text(type="ack", id=message_id)


def sent(effects: list[Effect]) -> list[tuple[int, dict[str, Any]]]:
    """The Send effects as (connection, decoded frame), asserting there is nothing else."""
    assert all(isinstance(effect, Send) for effect in effects), effects
    return [(effect.conn_id, orjson.loads(effect.text)) for effect in effects if isinstance(effect, Send)]


def message(message_id: str, payload: dict[str, Any]) -> dict[str, Any]:
    return {"type": "message", "id": message_id, "payload": payload}


def hub_with(*connections: tuple[int, str], **config: Any) -> Hub:
    hub = Hub(**config)
    for conn_id, user_id in connections:
        assert hub.open(conn_id, user_id, NOW) == []
    return hub


def answers_ping(hub: Hub, conn_id: int, now: float = NOW) -> bool:
    return hub.received(conn_id, PING, now) == [Send(conn_id, '{"type":"pong"}')]


# -- routing ----------------------------------------------------------------------------------------------------


def test_a_user_never_receives_another_users_push() -> None:
    hub = hub_with((1, ALICE), (2, BOB))
    assert sent(hub.push(BOB, "m-bob", {"text": "for bob"})) == [(2, message("m-bob", {"text": "for bob"}))]
    assert sent(hub.push(ALICE, "m-alice", {"text": "for alice"})) == [(1, message("m-alice", {"text": "for alice"}))]


def test_a_push_reaches_every_open_tab_of_the_user() -> None:
    hub = hub_with((1, ALICE), (2, ALICE), (3, ALICE), (4, BOB))
    effects = hub.push(ALICE, "m1", {"offer": 10})
    assert sent(effects) == [(conn_id, message("m1", {"offer": 10})) for conn_id in (1, 2, 3)]
    assert hub.connections(ALICE) == frozenset({1, 2, 3})


def test_a_push_to_a_user_with_no_connection_sends_nothing() -> None:
    hub = hub_with((1, BOB))
    assert not hub.online(ALICE)
    assert hub.push(ALICE, "m1", {}) == []
    assert hub.connections(ALICE) == frozenset()


def test_closed_connections_get_nothing() -> None:
    hub = hub_with((1, ALICE), (2, ALICE))
    hub.closed(1)
    assert sent(hub.push(ALICE, "m1", {})) == [(2, message("m1", {}))]
    assert hub.received(1, PING, NOW) == []
    assert hub.replay(1, [("m2", {})]) == []
    hub.closed(2)
    hub.closed(2)  # the shell may report a close twice
    assert not hub.online(ALICE)
    assert hub.push(ALICE, "m3", {}) == []


def test_a_connection_closed_by_the_hub_is_forgotten_at_once() -> None:
    hub = hub_with((1, ALICE), (2, ALICE))
    assert hub.received(1, "not json", NOW) == [Close(1, CLOSE_MALFORMED, "frame is not valid JSON")]
    assert hub.connections(ALICE) == frozenset({2})
    assert sent(hub.push(ALICE, "m1", {})) == [(2, message("m1", {}))]
    assert hub.received(1, PING, NOW) == []


def test_opening_an_open_connection_again_is_a_shell_bug() -> None:
    hub = hub_with((1, ALICE))
    with pytest.raises(ValueError, match="already open"):
        hub.open(1, BOB, NOW)


# -- frame size and type ----------------------------------------------------------------------------------------


def test_an_oversized_frame_closes_only_that_socket() -> None:
    hub = hub_with((1, ALICE), (2, ALICE), (3, BOB), max_frame_bytes=1_000)
    big = text(type="track", event="Product Viewed", properties={"blob": "x" * 1_000})
    [close] = hub.received(1, big, NOW)
    assert isinstance(close, Close)
    assert (close.conn_id, close.code) == (1, CLOSE_TOO_BIG)
    assert hub.connections(ALICE) == frozenset({2})
    assert answers_ping(hub, 2)
    assert answers_ping(hub, 3)
    assert sent(hub.push(ALICE, "m1", {})) == [(2, message("m1", {}))]
    assert sent(hub.push(BOB, "m2", {})) == [(3, message("m2", {}))]


def test_frame_size_is_counted_in_utf8_bytes_and_the_limit_itself_is_allowed() -> None:
    hub = hub_with((1, ALICE), (2, ALICE), max_frame_bytes=100)
    padding = 100 - len(text(type="ping", pad=""))
    assert sent(hub.received(1, text(type="ping", pad="x" * padding), NOW)) == [(1, {"type": "pong"})]
    # 64 characters but 104 bytes: within the limit if counted in characters, over it in bytes.
    [close] = hub.received(2, text(type="ping", pad="é" * 40), NOW)
    assert isinstance(close, Close) and close.code == CLOSE_TOO_BIG


def test_the_size_check_comes_before_anything_is_parsed() -> None:
    hub = hub_with((1, ALICE), (2, ALICE), max_frame_bytes=100)
    assert [effect.code for effect in hub.received(1, b"\x00" * 101, NOW) if isinstance(effect, Close)] == [
        CLOSE_TOO_BIG
    ]
    assert [effect.code for effect in hub.received(2, "{" * 101, NOW) if isinstance(effect, Close)] == [CLOSE_TOO_BIG]


def test_a_binary_frame_is_refused_even_if_it_holds_json() -> None:
    hub = hub_with((1, ALICE), (2, BOB))
    [close] = hub.received(1, PING.encode(), NOW)
    assert isinstance(close, Close)
    assert (close.conn_id, close.code) == (1, CLOSE_UNSUPPORTED_DATA)
    assert answers_ping(hub, 2)


@pytest.mark.parametrize(
    "frame",
    [
        "not json",
        "",
        '{"type": "ping"',
        "[1, 2]",
        '"ping"',
        "null",
        "{}",
        text(type="pong"),
        text(type="message", id="m1", payload={}),
        text(type=5),
        text(type="ack"),
        text(type="ack", id=5),
        text(type="track"),
        text(type="track", event=""),
        text(type="track", event="   "),
        text(type="track", event="x" * 201),
        text(type="track", event=["Product Viewed"]),
        text(type="track", event="Product Viewed", properties=[1, 2]),
        text(type="track", event="Product Viewed", properties="a=b"),
        text(type="track", event="Product Viewed", messageId=""),
        text(type="track", event="Product Viewed", messageId="m" * 201),
        text(type="track", event="Product Viewed", messageId=42),
        text(type="track", event="Product Viewed", timestamp=1772366400),
        text(type="consent"),
        text(type="consent", categoryPreferences={"ads": True}),
        text(type="consent", categoryPreferences={"marketing": 1}),
        text(type="consent", categoryPreferences={"marketing": True}, messageId=""),
        text(type="consent", categoryPreferences={"marketing": True}, messageId=["m"]),
        '{"type":"track","event":"Deep","properties":{"a":' + "[" * 300 + "]" * 300 + "}}",
        '"\ud800"',
    ],
)
def test_a_malformed_frame_closes_that_connection_with_4000(frame: str) -> None:
    hub = hub_with((1, ALICE), (2, ALICE), (3, BOB))
    [close] = hub.received(1, frame, NOW)
    assert isinstance(close, Close)
    assert (close.conn_id, close.code) == (1, CLOSE_MALFORMED)
    assert 0 < len(close.reason.encode()) <= MAX_REASON_BYTES
    assert answers_ping(hub, 2)
    assert answers_ping(hub, 3)


def test_unknown_fields_in_known_frames_are_ignored() -> None:
    hub = hub_with((1, ALICE))
    assert sent(hub.received(1, text(type="ping", version=2), NOW)) == [(1, {"type": "pong"})]


# -- rate limit -------------------------------------------------------------------------------------------------


def test_a_burst_beyond_the_bucket_closes_with_4008() -> None:
    hub = hub_with((1, ALICE), (2, ALICE), rate_per_s=20.0, burst=40)
    for _ in range(40):
        assert answers_ping(hub, 1)
    [close] = hub.received(1, PING, NOW)
    assert isinstance(close, Close)
    assert (close.conn_id, close.code) == (1, CLOSE_RATE_LIMITED)
    assert answers_ping(hub, 2)  # each connection has its own bucket


def test_a_connection_under_the_rate_is_never_closed() -> None:
    hub = hub_with((1, ALICE), rate_per_s=20.0, burst=40)
    for _ in range(40):
        assert answers_ping(hub, 1)
    # The bucket is empty now; 19 frames a second for five minutes stays under the 20 a second it refills.
    for frame_number in range(1, 19 * 300):
        assert answers_ping(hub, 1, NOW + frame_number / 19)


def test_the_bucket_refills_with_time() -> None:
    hub = hub_with((1, ALICE), rate_per_s=20.0, burst=40)
    for _ in range(40):
        assert answers_ping(hub, 1)
    later = NOW + 2.0  # 2 s at 20/s refills the whole bucket, and never more than it
    for _ in range(40):
        assert answers_ping(hub, 1, later)
    [close] = hub.received(1, PING, later)
    assert isinstance(close, Close) and close.code == CLOSE_RATE_LIMITED


def test_a_clock_stepping_back_does_not_drain_or_refill_the_bucket() -> None:
    hub = hub_with((1, ALICE), rate_per_s=20.0, burst=2)
    assert answers_ping(hub, 1, NOW)
    assert answers_ping(hub, 1, NOW - 100.0)
    [close] = hub.received(1, PING, NOW)
    assert isinstance(close, Close) and close.code == CLOSE_RATE_LIMITED


# -- connections per user ---------------------------------------------------------------------------------------


def test_too_many_connections_refuses_only_the_extra_one() -> None:
    hub = hub_with(*[(conn_id, ALICE) for conn_id in range(1, 6)], max_connections_per_user=5)
    assert hub.open(6, ALICE, NOW) == [Close(6, CLOSE_TOO_MANY_CONNECTIONS, "too many connections for this user")]
    assert hub.connections(ALICE) == frozenset(range(1, 6))
    assert hub.received(6, PING, NOW) == []
    assert len(sent(hub.push(ALICE, "m1", {}))) == 5
    assert hub.open(7, BOB, NOW) == []
    hub.closed(3)
    assert hub.open(8, ALICE, NOW) == []


def test_a_connection_whose_token_expired_is_closed_with_4001_and_gets_nothing_more() -> None:
    hub = hub_with((1, ALICE), (2, ALICE))
    assert hub.expired(1) == [Close(1, CLOSE_TOKEN_EXPIRED, "token expired: connect again with a new token")]
    assert sent(hub.push(ALICE, "m1", {})) == [(2, message("m1", {}))]
    assert hub.received(1, PING, NOW) == []
    assert hub.expired(1) == []  # already closed: nothing more to do


# -- acks and replay --------------------------------------------------------------------------------------------


def test_an_ack_from_two_tabs_gives_one_acked() -> None:
    hub = hub_with((1, ALICE), (2, ALICE))
    hub.push(ALICE, "m1", {})
    assert hub.received(1, ack("m1"), NOW) == [Acked(ALICE, "m1")]
    assert hub.received(2, ack("m1"), NOW) == []
    assert hub.received(1, ack("m1"), NOW) == []


def test_an_ack_for_an_unknown_or_another_users_message_is_ignored() -> None:
    hub = hub_with((1, ALICE), (2, BOB))
    hub.push(BOB, "m-bob", {})
    assert hub.received(1, ack("never-sent"), NOW) == []
    assert hub.received(1, ack("m-bob"), NOW) == []
    assert hub.received(2, ack("m-bob"), NOW) == [Acked(BOB, "m-bob")]
    assert answers_ping(hub, 1)


def test_replay_after_a_reconnect_sends_only_unacked_messages() -> None:
    hub = hub_with((1, ALICE))
    inbox = [("m1", {"n": 1}), ("m2", {"n": 2}), ("m3", {"n": 3})]
    for message_id, payload in inbox:
        hub.push(ALICE, message_id, payload)
    assert hub.received(1, ack("m1"), NOW) == [Acked(ALICE, "m1")]
    hub.closed(1)

    # The inbox still holds m1: its deletion has not reached Redis yet.
    assert hub.open(2, ALICE, NOW + 1) == []
    assert sent(hub.replay(2, inbox)) == [(2, message("m2", {"n": 2})), (2, message("m3", {"n": 3}))]
    assert hub.received(2, ack("m3"), NOW + 1) == [Acked(ALICE, "m3")]


def test_replay_does_not_resend_what_the_connection_was_pushed() -> None:
    hub = hub_with((1, ALICE))
    hub.push(ALICE, "m1", {"n": 1})
    assert sent(hub.replay(1, [("m1", {"n": 1}), ("m2", {"n": 2}), ("m2", {"n": 2})])) == [(1, message("m2", {"n": 2}))]
    assert hub.push(ALICE, "m2", {"n": 2}) == []


def test_replayed_messages_can_be_acked() -> None:
    hub = hub_with((1, ALICE))
    hub.replay(1, [("m1", {})])
    assert hub.received(1, ack("m1"), NOW) == [Acked(ALICE, "m1")]


def test_a_message_pushed_again_after_its_ack_is_not_sent() -> None:
    hub = hub_with((1, ALICE))
    hub.push(ALICE, "m1", {})
    hub.received(1, ack("m1"), NOW)
    assert hub.push(ALICE, "m1", {}) == []


def test_a_new_tab_gets_an_unacked_message_another_tab_already_has() -> None:
    hub = hub_with((1, ALICE))
    hub.push(ALICE, "m1", {})
    assert hub.open(2, ALICE, NOW) == []
    assert sent(hub.replay(2, [("m1", {})])) == [(2, message("m1", {}))]


def test_unacked_tracking_is_bounded_per_user() -> None:
    hub = hub_with((1, ALICE), max_unacked_per_user=2)
    for message_id in ("m1", "m2", "m3"):
        hub.push(ALICE, message_id, {})
    assert hub.received(1, ack("m1"), NOW) == []  # forgotten: it stays in the inbox and is replayed later
    assert hub.received(1, ack("m3"), NOW) == [Acked(ALICE, "m3")]


# -- consent withdrawals ----------------------------------------------------------------------------------------


def test_a_withdrawal_reaches_every_tab_of_that_user_and_no_one_else() -> None:
    hub = hub_with((1, ALICE), (2, BOB), (3, ALICE))
    withdrawn = {"type": "withdrawn", "purposes": ["marketing", "personalization"]}
    assert sent(hub.withdraw(ALICE, frozenset({"personalization", "marketing"}))) == [(1, withdrawn), (3, withdrawn)]
    assert hub.withdraw("carol", ["marketing"]) == []  # offline: her inbox was emptied by the shell
    hub.closed(3)
    assert sent(hub.withdraw(ALICE, ["marketing"])) == [(1, {"type": "withdrawn", "purposes": ["marketing"]})]


def test_a_withdrawal_leaves_pushes_and_acks_as_they_were() -> None:
    hub = hub_with((1, ALICE), (2, ALICE))
    hub.push(ALICE, "offer", {"title": "10% off", "consent": "marketing"})
    hub.withdraw(ALICE, ["marketing"])
    # Neither tab acks what it took back; a later message of another purpose still reaches both, once.
    assert [conn_id for conn_id, _ in sent(hub.push(ALICE, "tip", {"consent": "personalization"}))] == [1, 2]
    assert hub.push(ALICE, "tip", {"consent": "personalization"}) == []


def test_a_tab_told_of_a_withdrawal_before_its_replay_is_not_replayed_what_it_took_back() -> None:
    # The shell read the new tab's inbox before the withdrawal removed the offer, and was told of the withdrawal
    # before it replayed what it had read: the tab already has the withdrawn frame, so the offer must not follow.
    hub = hub_with((1, ALICE))
    assert sent(hub.withdraw(ALICE, ["marketing"])) == [(1, {"type": "withdrawn", "purposes": ["marketing"]})]
    offer = ("offer", {"title": "10% off", "consent": "marketing"})
    unstated = ("unstated", {"title": "decided before records named the purpose"})
    tip = ("tip", {"title": "A tip", "consent": "personalization"})
    assert sent(hub.replay(1, [offer, unstated, tip])) == [(1, message(*tip))]
    assert hub.received(1, ack("offer"), NOW) == []  # never sent, so never counted as shown
    # Consent given again: a later decision of that purpose is pushed, and shown.
    later = ("offer-2", {"title": "15% off", "consent": "marketing"})
    assert sent(hub.push(ALICE, *later)) == [(1, message(*later))]
    # A tab that opens after the withdrawal reads an inbox the withdrawal had already left: it gets what is there.
    assert hub.open(2, ALICE, NOW) == []
    assert sent(hub.replay(2, [later])) == [(2, message(*later))]


def test_a_withdrawal_spares_the_replays_of_other_users_and_other_purposes() -> None:
    hub = hub_with((1, ALICE), (2, BOB))
    hub.withdraw(ALICE, ["marketing"])
    offer, tip = ("offer", {"consent": "marketing"}), ("tip", {"consent": "personalization"})
    assert sent(hub.replay(2, [offer])) == [(2, message(*offer))]
    assert sent(hub.replay(1, [tip])) == [(1, message(*tip))]


@pytest.mark.parametrize("purposes", ["marketing", [1], [None]])
def test_a_withdrawal_of_anything_but_purpose_names_is_a_shell_bug(purposes: Any) -> None:
    with pytest.raises(TypeError):
        hub_with((1, ALICE)).withdraw(ALICE, purposes)


# -- track frames -----------------------------------------------------------------------------------------------


def test_a_track_frame_is_stamped_with_the_authenticated_user() -> None:
    hub = hub_with((1, ALICE))
    frame = text(
        type="track",
        event="Product Added",
        properties={"product_id": "p1", "price": 9.5},
        messageId="msg-1",
        timestamp="2026-03-01T11:59:59.000Z",
        userId="someone-else",
        anonymousId="anon-1",
        context={"channel": "server", "userId": "someone-else"},
    )
    assert hub.received(1, frame, NOW) == [
        Produce(
            ALICE,
            {
                "type": "track",
                "userId": ALICE,
                "event": "Product Added",
                "properties": {"product_id": "p1", "price": 9.5},
                "messageId": "msg-1",
                "timestamp": "2026-03-01T11:59:59.000Z",
                "context": {"channel": "websocket"},
            },
            1,
        )
    ]


def test_a_stored_event_gets_a_receipt_on_the_connection_that_sent_it_while_it_is_open() -> None:
    hub = hub_with((1, ALICE), (2, ALICE))
    [produce] = hub.received(2, text(type="track", event="Cart Viewed", messageId="msg-7"), NOW)
    assert isinstance(produce, Produce) and produce.conn_id == 2
    assert hub.stored(2, "msg-7") == [Send(2, '{"type":"stored","id":"msg-7"}')]
    hub.closed(2)
    assert hub.stored(2, "msg-7") == []  # the browser sends it again on its next connection


@pytest.mark.parametrize(
    ("timestamp", "reason"),
    [
        ("not a date", "track frame: timestamp is not an ISO-8601 date-time: 'not a date'"),
        ("2026-03-02T12:00:01Z", "track frame: timestamp is more than 24 h in the future"),
        ("0001-01-01T00:00:00+14:00", "track frame: timestamp must be between 1970-01-01T00:00:00Z and 9999-"),
        ("2026-03-01T12:00:00" + " " * 60, "track frame: timestamp longer than 64 characters"),
    ],
)
def test_a_track_frame_whose_timestamp_the_worker_would_refuse_is_refused_before_any_receipt(
    timestamp: str, reason: str
) -> None:
    # Accepted, the browser would get a receipt for an event the worker then drops: it is lost without a trace.
    hub = hub_with((1, ALICE), (2, ALICE))
    [close] = hub.received(1, text(type="track", event="Cart Viewed", timestamp=timestamp), NOW)
    assert isinstance(close, Close)
    assert (close.conn_id, close.code) == (1, CLOSE_MALFORMED)
    assert close.reason.startswith(reason)
    assert answers_ping(hub, 2)


def test_a_track_frame_stamped_up_to_24_h_ahead_is_produced_as_the_worker_accepts_it() -> None:
    hub = hub_with((1, ALICE))
    frame = text(type="track", event="Cart Viewed", timestamp="2026-03-02T12:00:00+00:00")
    [produce] = hub.received(1, frame, NOW)
    assert isinstance(produce, Produce)
    assert validate(produce.event, now_ms=int(NOW * 1000))[1] == int(NOW * 1000) + 86_400_000


def test_a_track_frame_without_properties_or_message_id_gets_them() -> None:
    def produced(hub: Hub) -> list[dict[str, Any]]:
        frame = text(type="track", event="Cart Viewed")
        effects = [*hub.received(1, frame, NOW), *hub.received(1, frame, NOW)]
        return [effect.event for effect in effects if isinstance(effect, Produce)]

    first, second = produced(hub_with((1, ALICE)))
    assert first["properties"] == {} and "timestamp" not in first
    assert first["messageId"] != second["messageId"]
    assert [first, second] == produced(hub_with((1, ALICE)))  # derived, not random: a replay gives the same ids


# -- hostile input ----------------------------------------------------------------------------------------------

KNOWN_CLOSE_CODES = {CLOSE_UNSUPPORTED_DATA, CLOSE_TOO_BIG, CLOSE_MALFORMED, CLOSE_RATE_LIMITED}
FRAGMENTS = [
    '{"type":',
    '"ack"',
    '"track"',
    '"ping"',
    '"id":',
    '"event":',
    '"properties":',
    "{",
    "}",
    "[",
    "]",
    ",",
    ":",
]
ALPHABET = 'abc{}[]":,0123456789 \\-.etruefalsn\x00\x1f\x7fé€🛒\ud800\udfff'


def random_value(rng: random.Random, depth: int = 0) -> Any:
    kind = rng.randrange(8 if depth < 4 else 5)
    if kind == 0:
        return None
    if kind == 1:
        return rng.choice([True, False, 0, -1, 2**70, 1.5, float(rng.random())])
    if kind in (2, 3, 4):
        return "".join(rng.choice(ALPHABET[:-2]) for _ in range(rng.randrange(0, 12)))
    if kind == 5:
        return [random_value(rng, depth + 1) for _ in range(rng.randrange(4))]
    return {rng.choice(["type", "id", "event", "properties", "x"]): random_value(rng, depth + 1) for _ in range(3)}


def random_frame(rng: random.Random, limit: int) -> str | bytes:
    kind = rng.randrange(8)
    if kind == 0:
        return bytes(rng.randrange(256) for _ in range(rng.randrange(0, 64)))
    if kind == 1:
        return "".join(rng.choice(ALPHABET) for _ in range(rng.randrange(0, 64)))
    if kind == 2:
        return "".join(rng.choice(FRAGMENTS) for _ in range(rng.randrange(1, 12)))
    if kind == 3:
        return "x" * rng.randrange(limit - 10, limit + 10)
    if kind == 4:
        depth = rng.randrange(200, 1100)
        return '{"type":"track","event":"e","properties":{"a":' + "[" * depth + "]" * depth + "}}"
    valid = rng.choice(
        [
            text(type="ping"),
            text(type="ack", id=f"m{rng.randrange(5)}"),
            text(type="track", event="Product Viewed", properties={"p": 1}, userId="intruder"),
        ]
    )
    if kind == 5:
        return valid
    if kind == 6:
        frame = dict(orjson.loads(valid))
        frame[rng.choice(["type", "id", "event", "properties", "messageId", "timestamp"])] = random_value(rng)
        # The standard library encodes what orjson will not (integers past 64 bits), to see how the hub takes them.
        return json.dumps(frame, ensure_ascii=rng.random() < 0.5)
    cut = rng.randrange(len(valid))
    return valid[:cut] + rng.choice(ALPHABET) + valid[cut + rng.randrange(2) :]


def test_random_frames_never_raise_and_yield_only_known_effects() -> None:
    rng = random.Random(20260301)
    limit = 512
    hub = Hub(max_frame_bytes=limit, max_connections_per_user=3, rate_per_s=50.0, burst=20)
    owners: dict[int, str] = {}
    next_conn = 0
    now = NOW
    seen: set[type] = set()
    for _ in range(2_000):
        while len(owners) < 4:
            user_id = rng.choice([ALICE, BOB, "carol"])
            if not hub.open(next_conn, user_id, now):
                owners[next_conn] = user_id
                hub.replay(next_conn, [(f"m{n}", {"n": n}) for n in range(3)])
            next_conn += 1
        if rng.random() < 0.05:
            hub.push(rng.choice([ALICE, BOB, "carol"]), f"m{rng.randrange(5)}", {"x": 1})
        now += rng.choice([0.0, 0.001, 0.05, 1.0])
        conn_id = rng.choice(sorted(owners))
        effects = hub.received(conn_id, random_frame(rng, limit), now)
        for effect in effects:
            seen.add(type(effect))
            match effect:
                case Send(conn_id=target, text=body):
                    assert target == conn_id
                    assert orjson.loads(body)["type"] in ("pong", "message")
                case Close(conn_id=target, code=code, reason=reason):
                    assert target == conn_id and code in KNOWN_CLOSE_CODES
                    assert 0 < len(reason.encode()) <= MAX_REASON_BYTES
                    del owners[conn_id]
                    hub.closed(conn_id)
                case Produce(user_id=user_id, event=event):
                    assert user_id == owners[conn_id] == event["userId"]
                    assert "anonymousId" not in event
                    orjson.dumps(event)
                case Acked(user_id=user_id):
                    assert user_id == owners[conn_id]
                case _:
                    pytest.fail(f"unknown effect {effect!r}")
        assert set(owners) == {c for user in (ALICE, BOB, "carol") for c in hub.connections(user)}
    assert seen == {Send, Close, Produce, Acked}


def test_a_consent_frame_becomes_a_consent_event_of_the_authenticated_user() -> None:
    hub = hub_with((1, ALICE))
    [produce] = hub.received(1, text(type="consent", categoryPreferences={"marketing": False}, userId=BOB), NOW)
    assert isinstance(produce, Produce) and produce.user_id == ALICE
    assert produce.event["userId"] == ALICE and produce.event["event"] == "Consent Updated"
    assert produce.event["context"] == {
        "channel": "websocket",
        "consent": {"categoryPreferences": {"marketing": False}},
    }
    # The SDK names it, so that a copy sent again after a reconnect is recognised.
    [named] = hub.received(1, text(type="consent", categoryPreferences={"marketing": True}, messageId="c-1"), NOW)
    assert isinstance(named, Produce) and named.event["messageId"] == "c-1"
    [refused] = hub.received(1, text(type="consent", categoryPreferences={"ads": True}), NOW)
    assert isinstance(refused, Close) and refused.reason.startswith(
        "consent frame: categoryPreferences: unknown purpose"
    )
