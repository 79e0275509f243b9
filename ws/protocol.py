"""The websocket gateway's sans-I/O core: which socket gets which message, acks, and what browsers may send.

:class:`Hub` owns no sockets, reads no clock and does no I/O. The shell (the ``websockets`` server) tells it what
happened -- a socket opened for an authenticated user (:meth:`Hub.open`), a text or binary message arrived
(:meth:`Hub.received`), a socket went away (:meth:`Hub.closed`), a message for a user came off ``nudge.messages``
(:meth:`Hub.push`), a new socket's inbox was read from Redis (:meth:`Hub.replay`) -- and each call returns a list of
effects, in order, that the shell must carry out:

- :class:`Send`: send ``text`` as one text frame on that connection. Drop it if the socket has closed meanwhile.
- :class:`Close`: close that connection with ``code`` and ``reason``, and call :meth:`Hub.closed` when it is gone. The
  hub has already forgotten the connection: it sends it nothing more and ignores whatever else it receives.
- :class:`Produce`: produce ``event`` (a Segment track event, known to encode with ``orjson``) to ``nudge.events``
  keyed by ``user_id``; once the broker has stored it, call :meth:`Hub.stored` and carry out its effects (the
  receipt). If it cannot be stored, close that connection: the browser sends the event again on its next one.
- :class:`Acked`: delete ``message_id`` from ``user_id``'s Redis inbox. It is issued once per (user, message) however
  many tabs ack it.

A user who withdraws consent for a purpose takes back their messages of that purpose: the shell removes those still
in the inbox (:func:`ws.delivery.withdraw`) and calls :meth:`Hub.withdraw` on the node holding the user's sockets,
whose :class:`Send` effects tell each of the user's tabs to take the pop-ups of that purpose off the screen. A tab
opening meanwhile may have its inbox read before the removal and be told of the withdrawal before that read is
replayed: :meth:`Hub.replay` skips the messages of purposes withdrawn since the connection opened.

Delivery is at least once. A push reaches the user's open connections now; the Redis inbox, written by the shell
before it calls :meth:`Hub.push`, keeps the message for connections that open later, and a message a tab has seen is
not sent to that tab again. The browser SDK still drops duplicate ids, since messages can outlive what the hub
remembers (a gateway restart, a user with more than ``max_unacked_per_user`` open messages).

Browser frames are JSON text::

    {"type": "ack", "id": "<message id>"}
    {"type": "track", "event": "<name>", "properties": {...}, "messageId"?: "<id>", "timestamp"?: "<ISO-8601>"}
    {"type": "consent", "categoryPreferences": {"marketing": false, ...}, "messageId"?: "<id>"}
    {"type": "ping"}

and the hub answers with ``{"type": "message", "id": "<message id>", "payload": {...}}``, ``{"type": "pong"}`` and,
for each track or consent event once the broker stored it, ``{"type": "stored", "id": "<its messageId>"}``. The SDK
keeps an event until that receipt and sends it again on its next connection if the socket closes first, so a
gateway killed with events in its buffers loses none; the worker skips a second copy by its ``messageId``.

A message's ``payload`` names the purpose it needs (``"consent": "marketing"``; absent in messages decided before
decision records said it). When the user withdraws consent, each of their tabs gets
``{"type": "withdrawn", "purposes": ["marketing", ...]}``: the SDK removes the pop-ups it shows of those purposes, and
of no stated purpose, and does not ack them; pop-ups of the other purposes stay. After that frame a tab gets messages
of those purposes only as pushes, decided after the withdrawal (consent given again), never from a replay.
Anything else closes that connection only, with one of the ``CLOSE_*`` codes below; it never raises.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

import orjson

from app.events import InvalidEvent, event_timestamp
from models.consent import CONSENT_EVENT, parse_preferences

CLOSE_UNSUPPORTED_DATA: Final = 1003
"""The client sent a binary frame; the protocol is JSON text only."""
CLOSE_TOO_BIG: Final = 1009
"""The client sent a frame larger than ``max_frame_bytes``."""
CLOSE_MALFORMED: Final = 4000
"""The client sent a frame that is not JSON, not an object, of unknown type, or with bad fields."""
CLOSE_TOKEN_EXPIRED: Final = 4001
"""The token the connection was opened with has expired; the client should connect again with a new one."""
CLOSE_RATE_LIMITED: Final = 4008
"""The client sent frames faster than ``rate_per_s`` for longer than ``burst`` allows."""
CLOSE_TOO_MANY_CONNECTIONS: Final = 4009
"""The user already has ``max_connections_per_user`` open connections; the new one is refused."""

#: A close frame's reason must fit in 123 bytes of UTF-8 (RFC 6455, section 5.5).
MAX_REASON_BYTES: Final = 123
MAX_EVENT_NAME_LENGTH: Final = 200
MAX_MESSAGE_ID_LENGTH: Final = 200
MAX_TIMESTAMP_LENGTH: Final = 64

_PONG: Final = '{"type":"pong"}'


@dataclass(frozen=True, slots=True)
class Send:
    """Send ``text`` as a text frame on connection ``conn_id``."""

    conn_id: int
    text: str


@dataclass(frozen=True, slots=True)
class Close:
    """Close connection ``conn_id`` with ``code`` and ``reason`` (at most 123 bytes), then report it closed."""

    conn_id: int
    code: int
    reason: str


@dataclass(frozen=True, slots=True)
class Produce:
    """Produce ``event`` to ``nudge.events`` with key ``user_id`` (always the authenticated user), for ``conn_id``."""

    user_id: str
    event: dict[str, Any]
    conn_id: int


@dataclass(frozen=True, slots=True)
class Acked:
    """``user_id`` has seen ``message_id``: delete it from the user's inbox."""

    user_id: str
    message_id: str


Effect = Send | Close | Produce | Acked


@dataclass(slots=True)
class _Connection:
    user_id: str
    tokens: float
    refilled_at: float
    #: Ids sent on this connection and not yet acked, so a replay or a repeated push does not send them twice.
    sent: set[str] = field(default_factory=set)
    tracks: int = 0
    #: Purposes withdrawn since the connection opened, whose messages a replay skips (see :meth:`Hub.replay`). Kept
    #: for the connection's life: the hub cannot tell which of its replays read the inbox before the withdrawal.
    withdrawn: set[str] = field(default_factory=set)


@dataclass(slots=True)
class _User:
    #: Insertion-ordered sets (dicts with ``None`` values), so effects come out in a reproducible order.
    connections: dict[int, None] = field(default_factory=dict)
    unacked: dict[str, None] = field(default_factory=dict)


class Hub:
    """Routes messages to users' open connections and turns browser frames into effects.

    Configuration, all keyword-only:

    - ``max_frame_bytes``: the largest frame a browser may send, in bytes of UTF-8 (close 1009 beyond it).
    - ``max_connections_per_user``: open connections (tabs) per user; one more is refused with close 4009.
    - ``rate_per_s`` and ``burst``: a token bucket per connection; every frame takes a token, the bucket holds
      ``burst`` and refills at ``rate_per_s``; a frame finding it empty closes the connection with 4008.
    - ``max_unacked_per_user``: how many sent-but-unacked message ids the hub tracks per online user; the oldest is
      forgotten beyond it (it stays in the Redis inbox and is replayed on the next connection).
    - ``remembered_acks``: how many recently acked (user, message) pairs the hub remembers across all users, so a
      replay right after a reconnect skips messages whose inbox deletion may not have happened yet.
    """

    def __init__(
        self,
        *,
        max_frame_bytes: int = 16_384,
        max_connections_per_user: int = 5,
        rate_per_s: float = 20.0,
        burst: int = 40,
        max_unacked_per_user: int = 256,
        remembered_acks: int = 65_536,
    ) -> None:
        if max_frame_bytes < 1 or max_connections_per_user < 1 or burst < 1:
            raise ValueError("max_frame_bytes, max_connections_per_user and burst must be at least 1")
        if not rate_per_s > 0:
            raise ValueError(f"rate_per_s must be positive, not {rate_per_s}")
        if max_unacked_per_user < 1 or remembered_acks < 0:
            raise ValueError("max_unacked_per_user must be at least 1 and remembered_acks at least 0")
        self.max_frame_bytes = max_frame_bytes
        self.max_connections_per_user = max_connections_per_user
        self.rate_per_s = rate_per_s
        self.burst = burst
        self.max_unacked_per_user = max_unacked_per_user
        self.remembered_acks = remembered_acks
        self._connections: dict[int, _Connection] = {}
        self._users: dict[str, _User] = {}
        self._recently_acked: OrderedDict[tuple[str, str], None] = OrderedDict()

    # -- connections ---------------------------------------------------------------------------------------------

    def open(self, conn_id: int, user_id: str, now: float) -> list[Effect]:
        """Register a connection authenticated as ``user_id``.

        Returns ``[]`` when accepted: the shell should then read the user's inbox and call :meth:`replay`. Returns a
        :class:`Close` (4009) when the user already has ``max_connections_per_user`` connections; the hub does not
        track the refused connection. ``conn_id`` must not be open already (a shell bug: :class:`ValueError`).
        """
        if conn_id in self._connections:
            raise ValueError(f"connection {conn_id} is already open")
        user = self._users.get(user_id)
        if user is not None and len(user.connections) >= self.max_connections_per_user:
            return [Close(conn_id, CLOSE_TOO_MANY_CONNECTIONS, "too many connections for this user")]
        if user is None:
            user = self._users[user_id] = _User()
        user.connections[conn_id] = None
        self._connections[conn_id] = _Connection(user_id, tokens=float(self.burst), refilled_at=now)
        return []

    def closed(self, conn_id: int) -> None:
        """Forget a connection once its socket is gone. Unknown or already forgotten ids are ignored."""
        connection = self._connections.pop(conn_id, None)
        if connection is None:
            return
        user = self._users[connection.user_id]
        del user.connections[conn_id]
        if not user.connections:
            # The Redis inbox keeps whatever is unacked; the next connection replays it.
            del self._users[connection.user_id]

    def expired(self, conn_id: int) -> list[Effect]:
        """The token ``conn_id`` was opened with has expired: returns its :class:`Close` (4001), or ``[]`` for a
        connection the hub does not know. The browser connects again with a new token."""
        if conn_id not in self._connections:
            return []
        return self._close(conn_id, CLOSE_TOKEN_EXPIRED, "token expired: connect again with a new token")

    def connections(self, user_id: str) -> frozenset[int]:
        """The ids of ``user_id``'s open connections."""
        user = self._users.get(user_id)
        return frozenset(user.connections) if user is not None else frozenset()

    def online(self, user_id: str) -> bool:
        """Whether ``user_id`` has at least one open connection (for Redis presence)."""
        return user_id in self._users

    # -- server -> browser ---------------------------------------------------------------------------------------

    def push(self, user_id: str, message_id: str, payload: Mapping[str, Any]) -> list[Effect]:
        """Send a message to every open connection of ``user_id`` and track it until one of them acks it.

        Returns ``[]`` for a user with no connection (the inbox keeps the message), for a message the user has
        already acked (a redelivered decision), and for connections that were already sent it. ``payload`` must
        encode with ``orjson`` (a :class:`TypeError` otherwise: it comes from our own topic, not from a browser).
        """
        user = self._users.get(user_id)
        if user is None or (user_id, message_id) in self._recently_acked:
            return []
        text = _message_text(message_id, payload)
        effects: list[Effect] = []
        for conn_id in user.connections:
            connection = self._connections[conn_id]
            if message_id not in connection.sent:
                connection.sent.add(message_id)
                effects.append(Send(conn_id, text))
        self._track_unacked(user_id, user, message_id)
        return effects

    def withdraw(self, user_id: str, purposes: Iterable[str]) -> list[Effect]:
        """The user withdrew consent for ``purposes``: tell each of their open connections to take those pop-ups back.

        Returns one :class:`Send` per connection of ``user_id`` (``[]`` when they have none: what waits in the inbox
        is the shell's to remove, with :func:`ws.delivery.withdraw`). Other users' connections get nothing. A tab
        does not ack a message it took back: the hub forgets it as it forgets any unacked message, and the inbox no
        longer holds it. Each of those connections remembers the purposes, so that a replay to it skips their
        messages (:meth:`replay`). ``purposes`` come from our own topic: anything but names is a :class:`TypeError`.
        """
        if isinstance(purposes, str):
            raise TypeError(f"purposes must be a collection of names, not the string {purposes!r}")
        listed = sorted(purposes)
        if not all(isinstance(purpose, str) for purpose in listed):
            raise TypeError(f"purposes must be names, not {listed!r}")
        user = self._users.get(user_id)
        if user is None:
            return []
        for conn_id in user.connections:
            self._connections[conn_id].withdrawn.update(listed)
        text = orjson.dumps({"type": "withdrawn", "purposes": listed}).decode()
        return [Send(conn_id, text) for conn_id in user.connections]

    def replay(self, conn_id: int, pending: Iterable[tuple[str, Mapping[str, Any]]]) -> list[Effect]:
        """Send a newly opened connection its user's inbox, ``(message id, payload)`` pairs oldest first.

        Skips messages the user has acked (the inbox deletion may still be on its way), messages this connection
        was already pushed, and messages that need a purpose withdrawn since the connection opened (or name none).
        Returns ``[]`` for a connection the hub does not know (refused or closed meanwhile).
        """
        connection = self._connections.get(conn_id)
        if connection is None:
            return []
        user_id = connection.user_id
        user = self._users[user_id]
        effects: list[Effect] = []
        for message_id, payload in pending:
            if message_id in connection.sent or (user_id, message_id) in self._recently_acked:
                continue
            # The inbox may have been read before a withdrawal removed this message, and the tab already told to
            # take that purpose back: sent now, it would stay on screen. A message decided after consent was given
            # again is pushed to the tab; a replay leaves it in the inbox for the tab's next connection.
            if _taken_back(payload, connection.withdrawn):
                continue
            connection.sent.add(message_id)
            effects.append(Send(conn_id, _message_text(message_id, payload)))
            self._track_unacked(user_id, user, message_id)
        return effects

    # -- browser -> server ---------------------------------------------------------------------------------------

    def received(self, conn_id: int, data: str | bytes, now: float) -> list[Effect]:
        """Handle one frame from a browser. Never raises: a bad frame closes that connection only.

        Checks, in order: size (on the raw frame, before anything is parsed), binary, JSON object, rate limit, then
        the frame itself. Frames from a connection the hub does not know are ignored. ``now`` is the wall clock in
        unix seconds (``time.time()``): it refills the rate bucket and tells a track frame's timestamp from the future.
        """
        connection = self._connections.get(conn_id)
        if connection is None:
            return []
        size = _utf8_size(data, self.max_frame_bytes)
        if size > self.max_frame_bytes:
            return self._close(conn_id, CLOSE_TOO_BIG, f"frame too big: over {self.max_frame_bytes} bytes")
        if not isinstance(data, str):
            return self._close(conn_id, CLOSE_UNSUPPORTED_DATA, "binary frames are not supported: send JSON text")
        try:
            frame = orjson.loads(data)
        except orjson.JSONDecodeError:
            return self._close(conn_id, CLOSE_MALFORMED, "frame is not valid JSON")
        if not isinstance(frame, dict):
            return self._close(conn_id, CLOSE_MALFORMED, "frame must be a JSON object")
        if not self._take_token(connection, now):
            return self._close(conn_id, CLOSE_RATE_LIMITED, "rate limit exceeded")
        match frame.get("type"):
            case "ack":
                return self._ack(conn_id, connection, frame)
            case "track":
                return self._track(conn_id, connection, frame, now)
            case "consent":
                return self._consent(conn_id, connection, frame, now)
            case "ping":
                return [Send(conn_id, _PONG)]
            case _:
                return self._close(conn_id, CLOSE_MALFORMED, "unknown frame type: expected ack, track, consent or ping")

    def _ack(self, conn_id: int, connection: _Connection, frame: dict[str, Any]) -> list[Effect]:
        message_id = frame.get("id")
        if not isinstance(message_id, str):
            return self._close(conn_id, CLOSE_MALFORMED, "ack frame needs an id (string)")
        user_id = connection.user_id
        user = self._users[user_id]
        if message_id not in user.unacked:
            # Acked by another tab already, or never sent: either way nothing to delete.
            return []
        del user.unacked[message_id]
        for other in user.connections:
            self._connections[other].sent.discard(message_id)
        self._remember_ack(user_id, message_id)
        return [Acked(user_id, message_id)]

    def _track(self, conn_id: int, connection: _Connection, frame: dict[str, Any], now: float) -> list[Effect]:
        name = frame.get("event")
        if not isinstance(name, str) or not name.strip() or len(name) > MAX_EVENT_NAME_LENGTH:
            return self._close(
                conn_id, CLOSE_MALFORMED, f"track frame needs an event name of 1 to {MAX_EVENT_NAME_LENGTH} characters"
            )
        properties = frame.get("properties")
        if properties is None:
            properties = {}
        elif not isinstance(properties, dict):
            return self._close(conn_id, CLOSE_MALFORMED, "track frame: properties must be an object")
        message_id = frame.get("messageId")
        if not _valid_message_id(message_id):
            return self._close(
                conn_id, CLOSE_MALFORMED, f"track frame: messageId must be 1 to {MAX_MESSAGE_ID_LENGTH} characters"
            )
        timestamp = frame.get("timestamp")
        if timestamp is not None:
            refusal = _timestamp_refusal(timestamp, now)
            if refusal is not None:
                return self._close(conn_id, CLOSE_MALFORMED, f"track frame: {refusal}")

        connection.tracks += 1
        if message_id is None:
            message_id = _derived_message_id(connection.user_id, conn_id, connection.tracks, now)
        # Only the fields named here are copied: userId, anonymousId, context and anything else the browser wrote
        # are dropped, so the event is always the authenticated user's.
        event: dict[str, Any] = {
            "type": "track",
            "userId": connection.user_id,
            "event": name,
            "properties": properties,
            "messageId": message_id,
        }
        if timestamp is not None:
            event["timestamp"] = timestamp
        event["context"] = {"channel": "websocket"}
        try:
            # orjson parses 1024 levels of nesting but encodes only 254: refuse here what the shell could not send.
            orjson.dumps(event)
        except orjson.JSONEncodeError:
            return self._close(conn_id, CLOSE_MALFORMED, "track frame: properties are nested too deeply")
        return [Produce(connection.user_id, event, conn_id)]

    def _consent(self, conn_id: int, connection: _Connection, frame: dict[str, Any], now: float) -> list[Effect]:
        try:
            preferences = parse_preferences(
                frame.get("categoryPreferences"), where="consent frame: categoryPreferences"
            )
        except ValueError as error:
            return self._close(conn_id, CLOSE_MALFORMED, str(error))
        message_id = frame.get("messageId")
        if not _valid_message_id(message_id):
            return self._close(
                conn_id, CLOSE_MALFORMED, f"consent frame: messageId must be 1 to {MAX_MESSAGE_ID_LENGTH} characters"
            )
        connection.tracks += 1
        event: dict[str, Any] = {
            "type": "track",
            "userId": connection.user_id,
            "event": CONSENT_EVENT,
            "properties": {"source": "websocket"},
            "messageId": message_id or _derived_message_id(connection.user_id, conn_id, connection.tracks, now),
            "context": {"channel": "websocket", "consent": {"categoryPreferences": preferences}},
        }
        return [Produce(connection.user_id, event, conn_id)]

    def stored(self, conn_id: int, message_id: str) -> list[Effect]:
        """The event ``message_id`` that ``conn_id`` sent is stored by the broker: tell that browser, if still here."""
        if conn_id not in self._connections:
            return []
        return [Send(conn_id, orjson.dumps({"type": "stored", "id": message_id}).decode())]

    # -- bookkeeping ---------------------------------------------------------------------------------------------

    def _close(self, conn_id: int, code: int, reason: str) -> list[Effect]:
        self.closed(conn_id)
        return [Close(conn_id, code, _fit_reason(reason))]

    def _take_token(self, connection: _Connection, now: float) -> bool:
        # A clock that steps back refills nothing rather than draining the bucket.
        elapsed = max(0.0, now - connection.refilled_at)
        connection.tokens = min(float(self.burst), connection.tokens + elapsed * self.rate_per_s)
        connection.refilled_at = max(connection.refilled_at, now)
        if connection.tokens < 1.0:
            return False
        connection.tokens -= 1.0
        return True

    def _track_unacked(self, user_id: str, user: _User, message_id: str) -> None:
        user.unacked[message_id] = None
        while len(user.unacked) > self.max_unacked_per_user:
            oldest = next(iter(user.unacked))
            del user.unacked[oldest]
            for conn_id in user.connections:
                self._connections[conn_id].sent.discard(oldest)

    def _remember_ack(self, user_id: str, message_id: str) -> None:
        if self.remembered_acks == 0:
            return
        self._recently_acked[(user_id, message_id)] = None
        if len(self._recently_acked) > self.remembered_acks:
            self._recently_acked.popitem(last=False)


def _taken_back(payload: Mapping[str, Any], withdrawn: set[str]) -> bool:
    """Whether a message needs one of the ``withdrawn`` purposes; one that names none may need any of them (as in
    :meth:`ws.delivery.Withdrawal.covers`)."""
    if not withdrawn:
        return False
    purpose = payload.get("consent")
    return not isinstance(purpose, str) or purpose in withdrawn


def _message_text(message_id: str, payload: Mapping[str, Any]) -> str:
    return orjson.dumps({"type": "message", "id": message_id, "payload": payload}).decode()


def _utf8_size(data: str | bytes, limit: int) -> int:
    """The frame's size in bytes, without encoding a text frame that is obviously within or over ``limit``."""
    if not isinstance(data, str):
        return len(data)
    if len(data) > limit or data.isascii():
        # A character is at least one byte, so more characters than the limit is already too big.
        return len(data)
    return len(data.encode("utf-8", "surrogatepass"))


def _valid_message_id(message_id: object) -> bool:
    """A frame's ``messageId`` is optional; if given, a string of 1 to ``MAX_MESSAGE_ID_LENGTH`` characters."""
    return message_id is None or (isinstance(message_id, str) and 0 < len(message_id) <= MAX_MESSAGE_ID_LENGTH)


def _timestamp_refusal(timestamp: object, now: float) -> str | None:
    """Why the worker's validator (``app.events.validate``) would refuse this timestamp, or ``None``.

    Checked here because the worker drops such an event after the browser was told it is stored. The worker's clock
    is later than ``now``, so what passes here passes there.
    """
    if isinstance(timestamp, str) and len(timestamp) > MAX_TIMESTAMP_LENGTH:
        return f"timestamp longer than {MAX_TIMESTAMP_LENGTH} characters"
    try:
        event_timestamp(timestamp, now_ms=int(now * 1000))
    except InvalidEvent as error:
        return str(error)
    return None


def _derived_message_id(user_id: str, conn_id: int, sequence: int, now: float) -> str:
    """A messageId for a track frame that has none: unique per connection and frame, with no randomness."""
    seed = f"{user_id}\x00{conn_id}\x00{sequence}\x00{now!r}".encode("utf-8", "surrogatepass")
    return "ws-" + hashlib.blake2b(seed, digest_size=12).hexdigest()


def _fit_reason(reason: str) -> str:
    encoded = reason.encode("utf-8", "surrogatepass")
    if len(encoded) <= MAX_REASON_BYTES:
        return reason
    return encoded[:MAX_REASON_BYTES].decode("utf-8", "ignore")
