"""The gateway's HTTP side: who may open a websocket, and the few files and answers it serves over plain HTTP.

:class:`Routes` decides, from a request's path and headers alone, either to let the websocket handshake go on for an
authenticated user (:class:`Upgrade`) or to answer with an HTTP response (:class:`Respond`). It reads no socket and
no clock (the caller passes ``now``); the static files are read once, at construction.

Paths::

    GET /v1/ws?token=<token>      websocket upgrade; 401 with the reason when the token is missing, forged or expired;
                                  the socket lasts until the token expires
    GET /nudge.js                 the browser SDK
    GET /health                   {"node", "connections", "users"}
    GET /metrics                  Prometheus text format (:mod:`app.metrics`); needs ``Authorization: Bearer <api key>``
    GET /store/, /store/<file>    the demo store (only with ``demo_store``)
    GET /store/session[?user=]    the demo store's stand-in for a shop backend: a token for a ``demo-*`` user
                                  (only with ``demo_store``; in production the shop's backend calls POST /v1/ws-token)

The token travels in the query string because browsers cannot set headers on a websocket request; it is short-lived
(:mod:`ws.tokens`), and neither the gateway nor ``websockets`` logs request paths.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final
from urllib.parse import parse_qs, urlsplit

import orjson

from app.auth import has_api_key
from app.metrics import CONTENT_TYPE
from ws.tokens import DEFAULT_TTL_S, TokenError, issue_token, token_expiry, verify_token

STATIC_DIR: Final = Path(__file__).resolve().parent / "static"
DEMO_USER: Final = re.compile(r"^demo-[A-Za-z0-9_-]{1,40}$")
MAX_QUERY_FIELDS: Final = 8
_CONTENT_TYPES: Final = {
    ".html": "text/html; charset=utf-8",
    ".js": "application/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
}


@dataclass(frozen=True, slots=True)
class Upgrade:
    """Go on with the websocket handshake; the connection belongs to ``user_id`` until ``expires_at`` (unix seconds),
    when the shell must close it (:meth:`ws.protocol.Hub.expired`)."""

    user_id: str
    expires_at: int


@dataclass(frozen=True, slots=True)
class Respond:
    """Answer with this HTTP response instead of a websocket."""

    status: int
    body: bytes
    content_type: str = "application/json"
    headers: Mapping[str, str] = field(default_factory=dict)


def _error(status: int, reason: str) -> Respond:
    return Respond(status, orjson.dumps({"error": reason}), headers={"Cache-Control": "no-store"})


class Routes:
    """Routes one gateway's HTTP requests. ``stats`` returns the body of ``/health``, ``metrics`` that of
    ``/metrics`` (not served without it); ``api_keys`` may read ``/metrics`` (none: nobody may)."""

    def __init__(
        self,
        *,
        secret: bytes,
        demo_store: bool,
        stats: Callable[[], Mapping[str, Any]],
        api_keys: Collection[str] = frozenset(),
        metrics: Callable[[], bytes] | None = None,
    ) -> None:
        self._secret = secret
        self._demo_store = demo_store
        self._stats = stats
        self._api_keys = api_keys
        self._metrics = metrics
        self._files: dict[str, Respond] = {"/nudge.js": _static(STATIC_DIR / "nudge.js")}
        if demo_store:
            store = STATIC_DIR / "store"
            self._files["/store/"] = _static(store / "index.html")
            for path in sorted(store.iterdir()):
                if path.is_file() and path.suffix in _CONTENT_TYPES:
                    self._files[f"/store/{path.name}"] = _static(path)

    def handle(self, target: str, headers: Mapping[str, str], now: float) -> Upgrade | Respond:
        """Route one request: ``target`` is the request line's path and query, ``headers`` its headers."""
        try:
            parts = urlsplit(target)
        except ValueError:
            return _error(400, "malformed request target")
        try:
            query = parse_qs(parts.query, max_num_fields=MAX_QUERY_FIELDS)
        except ValueError:
            return _error(400, f"too many query parameters: at most {MAX_QUERY_FIELDS}")
        if parts.path == "/v1/ws":
            return self._upgrade(query, headers, now)
        if parts.path == "/health":
            return Respond(200, orjson.dumps(dict(self._stats())), headers={"Cache-Control": "no-store"})
        if parts.path == "/metrics" and self._metrics is not None:
            if not has_api_key(headers.get("Authorization", ""), self._api_keys):
                return _error(401, "missing or unknown API key (Authorization: Bearer <key>)")
            return Respond(200, self._metrics(), CONTENT_TYPE, {"Cache-Control": "no-store"})
        if parts.path == "/store" and self._demo_store:
            return Respond(308, b"", headers={"Location": "/store/"})
        if parts.path == "/store/session" and self._demo_store:
            return self._demo_session(query, now)
        static = self._files.get(parts.path)
        if static is not None:
            return static
        return _error(404, f"no such path: {parts.path[:100]}")

    def _upgrade(self, query: Mapping[str, list[str]], headers: Mapping[str, str], now: float) -> Upgrade | Respond:
        if "websocket" not in headers.get("Upgrade", "").lower():
            return _error(426, "this path is a websocket: connect with a websocket client")
        tokens = query.get("token", [])
        if len(tokens) != 1:
            return _error(401, "token missing: connect to /v1/ws?token=<token from POST /v1/ws-token>")
        try:
            return Upgrade(verify_token(self._secret, tokens[0], now=now), token_expiry(tokens[0]))
        except TokenError as error:
            return _error(401, f"token refused: {error.reason}")

    def _demo_session(self, query: Mapping[str, list[str]], now: float) -> Respond:
        users = query.get("user", [])
        user_id = users[0] if users else f"demo-{secrets.token_hex(4)}"
        if len(users) > 1 or not DEMO_USER.match(user_id):
            return _error(400, "user must look like demo-<1 to 40 letters, digits, _ or ->")
        expires_at = int(now) + DEFAULT_TTL_S
        token = issue_token(self._secret, user_id, expires_at=expires_at)
        body = {"userId": user_id, "token": token, "expiresAt": expires_at}
        return Respond(200, orjson.dumps(body), headers={"Cache-Control": "no-store"})


def _static(path: Path) -> Respond:
    return Respond(200, path.read_bytes(), _CONTENT_TYPES[path.suffix], {"Cache-Control": "no-cache"})
