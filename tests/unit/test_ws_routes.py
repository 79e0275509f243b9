"""The gateway's HTTP routing and the decoding of ``nudge.messages`` records, with no server and no broker."""

from __future__ import annotations

from urllib.parse import quote

import orjson
import pytest

from ws.delivery import Outgoing, outgoing
from ws.routes import Respond, Routes, Upgrade
from ws.tokens import issue_token, verify_token

SECRET = b"s" * 32
NOW = 1_800_000_000.0
UPGRADE = {"Upgrade": "websocket"}


def routes(*, demo_store: bool = False) -> Routes:
    return Routes(secret=SECRET, demo_store=demo_store, stats=lambda: {"connections": 3})


def error(route: Upgrade | Respond) -> tuple[int, str]:
    assert isinstance(route, Respond)
    return route.status, orjson.loads(route.body)["error"]


def test_a_valid_token_upgrades_the_connection_as_its_user() -> None:
    token = issue_token(SECRET, "ann", expires_at=int(NOW) + 60)
    # The shell closes the socket when the token expires: an upgrade carries the expiry.
    assert routes().handle(f"/v1/ws?token={quote(token)}", UPGRADE, NOW) == Upgrade("ann", int(NOW) + 60)


@pytest.mark.parametrize(
    ("query", "reason"),
    [
        ("", "token missing"),
        ("?token=a&token=b", "token missing"),
        ("?token=v1.YW5u.1.AAAA", "token refused: bad signature"),
        ("?token=garbage", "token refused: malformed"),
    ],
)
def test_a_missing_or_bad_token_is_refused_with_the_reason(query: str, reason: str) -> None:
    status, message = error(routes().handle(f"/v1/ws{query}", UPGRADE, NOW))
    assert status == 401
    assert message.startswith(reason)


def test_an_expired_token_is_refused() -> None:
    token = issue_token(SECRET, "ann", expires_at=int(NOW) - 1)
    assert error(routes().handle(f"/v1/ws?token={quote(token)}", UPGRADE, NOW)) == (401, "token refused: expired")


@pytest.mark.parametrize("path", ["/nudge.js", "/v1/ws", "/health"])
def test_too_many_query_parameters_are_refused_with_400_not_an_error(path: str) -> None:
    query = "&".join(f"{name}=1" for name in "abcdefghi")
    assert error(routes().handle(f"{path}?{query}", UPGRADE, NOW)) == (400, "too many query parameters: at most 8")
    assert routes().handle(f"/nudge.js?{query[:-4]}", {}, NOW) == routes().handle("/nudge.js", {}, NOW)


def test_a_target_that_is_not_a_url_is_refused_with_400_not_an_error() -> None:
    assert error(routes().handle("//[::1/v1/ws", UPGRADE, NOW)) == (400, "malformed request target")


def test_a_plain_http_request_to_the_socket_path_is_told_to_upgrade() -> None:
    assert error(routes().handle("/v1/ws", {}, NOW))[0] == 426


def test_the_sdk_and_health_are_served_but_the_demo_store_only_when_enabled() -> None:
    sdk = routes().handle("/nudge.js", {}, NOW)
    assert isinstance(sdk, Respond) and sdk.status == 200 and sdk.content_type.startswith("application/javascript")
    assert b"Nudge" in sdk.body
    health = routes().handle("/health", {}, NOW)
    assert isinstance(health, Respond) and orjson.loads(health.body) == {"connections": 3}
    assert error(routes().handle("/store/", {}, NOW))[0] == 404
    assert error(routes().handle("/store/session", {}, NOW))[0] == 404
    store = routes(demo_store=True).handle("/store/", {}, NOW)
    assert isinstance(store, Respond) and store.content_type.startswith("text/html") and b"nudge.js" in store.body
    css = routes(demo_store=True).handle("/store/store.css", {}, NOW)
    assert isinstance(css, Respond) and css.content_type.startswith("text/css")


def test_only_files_of_the_store_directory_are_served() -> None:
    for path in ("/store/../server.py", "/store/%2e%2e/server.py", "/../ws/server.py", "/store/missing.js"):
        assert error(routes(demo_store=True).handle(path, {}, NOW))[0] == 404


def test_the_demo_session_hands_out_tokens_for_demo_users_only() -> None:
    fresh = routes(demo_store=True).handle("/store/session", {}, NOW)
    assert isinstance(fresh, Respond) and fresh.status == 200
    body = orjson.loads(fresh.body)
    assert body["userId"].startswith("demo-")
    assert verify_token(SECRET, body["token"], now=NOW) == body["userId"]
    named = routes(demo_store=True).handle("/store/session?user=demo-ann", {}, NOW)
    assert isinstance(named, Respond) and orjson.loads(named.body)["userId"] == "demo-ann"
    for query in ("?user=ann", "?user=demo-", "?user=demo-a%00b", "?user=demo-a&user=demo-b"):
        assert error(routes(demo_store=True).handle(f"/store/session{query}", {}, NOW))[0] == 400


DECISION = {
    "id": "m1",
    "userId": "ann",
    "trigger": "cart_recovery",
    "timestamp": "2026-11-23T10:00:00.000Z",
    "outcome": "sent",
    "reason": None,
    "priority": 10,
    "message": {"title": "Still thinking about shoes?", "body": "1 item"},
}


def test_a_sent_decision_becomes_a_message_and_a_suppressed_one_nothing() -> None:
    assert outgoing(orjson.dumps(DECISION)) == Outgoing(
        "ann",
        "m1",
        {
            "trigger": "cart_recovery",
            "title": "Still thinking about shoes?",
            "body": "1 item",
            "priority": 10,
            "timestamp": "2026-11-23T10:00:00.000Z",
        },
        1_795_428_000_000,
    )
    assert outgoing(orjson.dumps({**DECISION, "outcome": "suppressed", "reason": "holdout"})) is None


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"not json", "not JSON"),
        (b"[]", "not a JSON object"),
        (orjson.dumps({**DECISION, "outcome": "maybe"}), "outcome must be"),
        (orjson.dumps({**DECISION, "userId": ""}), "userId and id"),
        (orjson.dumps({**DECISION, "message": "hi"}), "message must be"),
        (orjson.dumps({**DECISION, "timestamp": "yesterday"}), "timestamp is not"),
    ],
)
def test_a_record_that_is_not_a_decision_is_refused_with_a_reason(raw: bytes, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        outgoing(raw)
