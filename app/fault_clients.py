"""Websocket clients for the delivery faults (:mod:`app.faults_delivery`): tabs that behave like ``nudge.js``, and
one that never reads.

:class:`Tab` is one user's browser tab as the SDK behaves: it connects to its preferred gateway, and when the socket
goes away it reconnects with backoff, to the next gateway in its list if that one refuses. It acks every message
frame (unless told not to) and shows a message id only once, remembering the last :data:`SEEN_WINDOW` ids as the
SDK does, so it can tell the two kinds of repeat apart: frames that arrived more than once on the wire
(``socket_duplicates``) and pop-ups shown more than once (``duplicate_pops``, the one a shopper would notice).

:class:`SilentSocket` completes the websocket handshake with a tiny receive buffer and then never reads a byte: the
client the gateway's send-buffer limit exists for.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import socket
import time
from collections import Counter, deque
from urllib.parse import quote

import orjson
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake

from ws.tokens import issue_token

#: nudge.js remembers the last 200 message ids it showed (``MAX_SEEN_IDS``).
SEEN_WINDOW = 200
MAX_BACKOFF_S = 1.0
_PING = '{"type":"ping"}'


def token(secret: str, user: str) -> str:
    return issue_token(secret.encode(), user, expires_at=int(time.time()) + 3_600)


class Tab:
    """One user's tab: :meth:`run` until cancelled; read what it received from the attributes."""

    def __init__(self, user: str, urls: list[str], secret: str, *, ack: bool = True) -> None:
        self.user = user
        self.urls = urls
        self.secret = secret
        self.ack = ack
        #: Set while a socket is open and registered (its ping answered: the gateway recorded presence).
        self.registered = asyncio.Event()
        #: Every message frame: (message id, receive time, payload timestamp).
        self.frames: list[tuple[str, float, str]] = []
        #: How many times each message id was shown as a pop-up (more than once: the SDK's dedupe missed it).
        self.shown: Counter[str] = Counter()
        #: When each socket after the first was registered (reconnects), and how sockets ended, by close code.
        self.reconnected_at: list[float] = []
        self.closes: Counter[str] = Counter()
        self.connections = 0
        self._seen: deque[str] = deque(maxlen=SEEN_WINDOW)

    @property
    def socket_duplicates(self) -> int:
        return len(self.frames) - len({message_id for message_id, _, _ in self.frames})

    @property
    def duplicate_pops(self) -> int:
        return sum(count - 1 for count in self.shown.values())

    async def run(self) -> None:
        failures = 0
        while True:
            url = self.urls[failures % len(self.urls)]
            try:
                await self._serve(url)
                failures = 0
            except (OSError, TimeoutError, InvalidHandshake) as error:
                self.closes[type(error).__name__] += 1
                failures += 1
            self.registered.clear()
            await asyncio.sleep(min(MAX_BACKOFF_S, 0.05 * 2 ** min(failures, 5)))

    async def _serve(self, url: str) -> None:
        address = f"{url}?token={quote(token(self.secret, self.user))}"
        async with connect(address, compression=None, ping_interval=None, open_timeout=10, close_timeout=1) as ws:
            try:
                await ws.send(_PING)
                async for raw in ws:
                    frame = orjson.loads(raw)
                    if frame.get("type") == "pong":
                        if self.connections:
                            self.reconnected_at.append(time.time())
                        self.connections += 1
                        self.registered.set()
                    elif frame.get("type") == "message":
                        await self._message(frame, ws.send)
            except ConnectionClosed:
                pass
            self.closes[str(ws.close_code)] += 1

    async def _message(self, frame: dict[str, object], send: object) -> None:
        message_id = str(frame["id"])
        payload = frame.get("payload")
        stamp = str(payload.get("timestamp", "")) if isinstance(payload, dict) else ""
        self.frames.append((message_id, time.time(), stamp))
        if message_id not in self._seen:
            self._seen.append(message_id)
            self.shown[message_id] += 1
        if self.ack:
            assert callable(send)
            await send(orjson.dumps({"type": "ack", "id": message_id}).decode())


class SilentSocket:
    """A websocket client that completes the handshake and then never reads. :meth:`open`, later :meth:`close`."""

    def __init__(self, port: int, user: str, secret: str) -> None:
        self.port = port
        self.user = user
        self.secret = secret
        self._socket: socket.socket | None = None

    async def open(self) -> None:
        sock = socket.socket()
        # A small receive window, and a small segment size like a real network's rather than loopback's 64 KB: with
        # loopback's, the gateway's kernel would take about 3 MB into its send buffer (measured) before the
        # gateway's own limit on unsent bytes even starts to count.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4_096)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG, 536)
        sock.setblocking(False)
        loop = asyncio.get_running_loop()
        await loop.sock_connect(sock, ("127.0.0.1", self.port))
        key = base64.b64encode(os.urandom(16)).decode()
        request = (
            f"GET /v1/ws?token={quote(token(self.secret, self.user))} HTTP/1.1\r\nHost: 127.0.0.1:{self.port}\r\n"
            "Upgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        await loop.sock_sendall(sock, request.encode())
        head = b""
        async with asyncio.timeout(10):
            while b"\r\n\r\n" not in head:
                # One byte at a time: not a byte past the handshake is read.
                byte = await loop.sock_recv(sock, 1)
                if not byte:
                    raise ConnectionError("the gateway closed the silent socket during the handshake")
                head += byte
        if not head.startswith(b"HTTP/1.1 101"):
            raise ConnectionError(f"handshake refused: {head.splitlines()[0]!r}")
        self._socket = sock

    def close(self) -> None:
        if self._socket is not None:
            with contextlib.suppress(OSError):
                self._socket.close()
            self._socket = None
