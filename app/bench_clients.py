"""``python -m app.bench_clients``: the websocket clients of ``nudge bench --e2e`` and ``--soak``, in a process of
their own.

A load generator with its own CPU and GIL, so that receiving pushes never competes with the producer whose send
times it is measured against. It opens ``--clients`` sockets to a gateway as the users :func:`bench_user` names
(tokens signed with the secret in ``NUDGE_BENCH_SECRET``; never on the command line), at most ``--concurrency``
handshakes at a time, and makes sure each is registered (a ping answered by a pong: the gateway records presence
before it reads frames). Every pushed message is acked like the browser SDK does, and recorded with its receive
time (``time.time()``, comparable with the other processes on the machine).

Talk to it over its standard streams (:class:`ClientProcess` does, from the bench's process): it prints one JSON
line on stdout when the sockets are open (``{"ready": true, "connected": [user index, ...], "failed": n}``), then
answers each line read on stdin with one JSON line:

- ``messages``: ``{"messages": [[user index, message id, receive time, payload timestamp], ...]}``, the messages
  received since the last ``messages``;
- ``stats``: since the last ``stats``, the event-loop lag, garbage collection pauses and sockets closed (by close
  code), and how many sockets are open;
- ``quit`` (or end of input): close the sockets and exit.

Progress goes to stderr. Everything is bounded: handshakes by ``--connect-timeout``, the whole process by
``--max-seconds``.

Garbage collection: once the sockets are open the process freezes what exists and raises the young-generation
threshold, as the gateway does (:func:`ws.server.tune_gc`), so that a full collection never walks thousands of
sockets in the middle of a measurement; the pauses that remain are measured and reported.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import os
import sys
import time
from collections.abc import Sequence
from typing import Any
from urllib.parse import quote

import orjson
import uvloop
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake

from ws.tokens import issue_token

#: Environment variable that carries the token secret to the client process.
SECRET_ENV = "NUDGE_BENCH_SECRET"
#: How often the event-loop lag is sampled: a sleep of this long that overshoots measures how late the loop is.
LAG_TICK_S = 0.005
CONNECT_ATTEMPTS = 3
CLOSE_TIMEOUT_S = 10.0
_PING = '{"type":"ping"}'


def bench_user(index: int) -> str:
    """The user id of client ``index``: the producer of ``nudge bench --e2e`` sends events as the same users."""
    return f"bench-user-{index:05d}"


class GcPauses:
    """Measures this process's garbage collections once :meth:`start` froze what exists (as the gateway does)."""

    def __init__(self) -> None:
        self._pauses_ms: list[float] = []
        self._started = 0.0

    def start(self) -> None:
        gc.collect()
        gc.freeze()
        gc.set_threshold(50_000, 20, 100)
        gc.callbacks.append(self._on_gc)

    def stop(self) -> None:
        with contextlib.suppress(ValueError):
            gc.callbacks.remove(self._on_gc)

    def take(self) -> dict[str, Any]:
        """Collections since the last call: how many, their total and longest pause."""
        pauses, self._pauses_ms = self._pauses_ms, []
        return {
            "collections": len(pauses),
            "total_ms": round(sum(pauses), 3),
            "max_ms": round(max(pauses, default=0), 3),
        }

    def _on_gc(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        else:
            self._pauses_ms.append((time.perf_counter() - self._started) * 1000)


class Clients:
    """``count`` websocket clients of one gateway: :meth:`open_all`, then collect :meth:`messages` and :meth:`stats`."""

    def __init__(
        self, url: str, secret: bytes, count: int, *, concurrency: int, connect_timeout: float, token_ttl_s: int
    ) -> None:
        self.url = url
        self.secret = secret
        self.count = count
        self.concurrency = concurrency
        self.connect_timeout = connect_timeout
        self.token_ttl_s = token_ttl_s
        self.sockets: dict[int, ClientConnection] = {}
        self.failed = 0
        self._messages: list[tuple[int, str, float, str | None]] = []
        self._lags: list[float] = []
        self.gc = GcPauses()
        self._closed: dict[str, int] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    async def open_all(self) -> None:
        """Open every socket, ``concurrency`` handshakes at a time; progress on stderr about once a second."""
        slots = asyncio.Semaphore(self.concurrency)
        started = time.monotonic()
        printed = started

        async def one(index: int) -> None:
            nonlocal printed
            async with slots:
                await self._open(index)
            now = time.monotonic()
            if now - printed >= 1.0:
                printed = now
                self._progress(started)

        await asyncio.gather(*(one(index) for index in range(self.count)))
        self._progress(started)

    def _progress(self, started: float) -> None:
        print(
            f"bench clients: {len(self.sockets):,}/{self.count:,} connected, {self.failed:,} failed "
            f"({time.monotonic() - started:.1f} s)",
            file=sys.stderr,
            flush=True,
        )

    async def _open(self, index: int) -> None:
        user = bench_user(index)
        for attempt in range(CONNECT_ATTEMPTS):
            token = issue_token(self.secret, user, expires_at=int(time.time()) + self.token_ttl_s)
            socket: ClientConnection | None = None
            try:
                async with asyncio.timeout(self.connect_timeout):
                    socket = await connect(
                        f"{self.url}?token={quote(token)}",
                        compression=None,
                        ping_interval=None,  # the gateway pings; answering is automatic
                        open_timeout=self.connect_timeout,
                        close_timeout=2,
                    )
                    # The pong comes back only once the gateway's handler reads frames, i.e. after it recorded
                    # presence: from then on, messages for this user are published to this gateway.
                    await socket.send(_PING)
                    while True:
                        frame = orjson.loads(await socket.recv())
                        if frame.get("type") == "pong":
                            break
                        if frame.get("type") == "message":  # left in the inbox by an earlier bench on this stack
                            await socket.send(orjson.dumps({"type": "ack", "id": frame["id"]}).decode())
            except (OSError, TimeoutError, InvalidHandshake, ConnectionClosed, orjson.JSONDecodeError) as error:
                if socket is not None:
                    socket.transport.abort()
                if attempt == CONNECT_ATTEMPTS - 1:
                    self.failed += 1
                    print(f"bench clients: {user} failed to connect: {error!r}", file=sys.stderr, flush=True)
                    return
                await asyncio.sleep(0.2 * (attempt + 1))
                continue
            self.sockets[index] = socket
            task = asyncio.create_task(self._read(index, socket))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
            return

    async def _read(self, index: int, socket: ClientConnection) -> None:
        try:
            async for raw in socket:
                received_at = time.time()
                frame = orjson.loads(raw)
                if frame.get("type") != "message":
                    continue
                message_id = frame["id"]
                self._messages.append((index, message_id, received_at, frame.get("payload", {}).get("timestamp")))
                await socket.send(orjson.dumps({"type": "ack", "id": message_id}).decode())
        except ConnectionClosed:
            pass
        finally:
            self.sockets.pop(index, None)
            code = socket.close_code
            self._closed[str(code)] = self._closed.get(str(code), 0) + 1

    async def watch_loop(self) -> None:
        """Sample how late the event loop runs (``LAG_TICK_S`` sleeps that overshoot) until cancelled."""
        while True:
            before = time.perf_counter()
            await asyncio.sleep(LAG_TICK_S)
            self._lags.append(time.perf_counter() - before - LAG_TICK_S)

    def messages(self) -> dict[str, Any]:
        """The messages received since the last call."""
        messages, self._messages = self._messages, []
        return {"messages": messages}

    def stats(self) -> dict[str, Any]:
        """How the sockets and this process fared since the last call."""
        lags = sorted(self._lags)
        report = {
            "open": len(self.sockets),
            "closed": self._closed,
            "loop_lag_ms": {
                "p99": round(lags[int(0.99 * (len(lags) - 1))] * 1000, 3) if lags else None,
                "max": round(lags[-1] * 1000, 3) if lags else None,
            },
            "gc": self.gc.take(),
        }
        self._lags, self._closed = [], {}
        return report

    async def close_all(self) -> None:
        sockets = list(self.sockets.values())
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(CLOSE_TIMEOUT_S):
                await asyncio.gather(*(socket.close() for socket in sockets), return_exceptions=True)


class ClientProcess:
    """This module in a child process, driven from the bench's side; ``connected`` lists the client indexes whose
    socket is open. Use it as an async context manager: the process has opened its sockets on entry and is gone on
    exit."""

    def __init__(self, url: str, secret: str, clients: int, *, max_seconds: float) -> None:
        self.url = url
        self.secret = secret
        self.clients = clients
        self.max_seconds = max_seconds
        self.connected: list[int] = []
        self._process: asyncio.subprocess.Process | None = None

    async def __aenter__(self) -> ClientProcess:
        self._process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "app.bench_clients",
            "--url",
            self.url,
            "--clients",
            str(self.clients),
            "--max-seconds",
            str(self.max_seconds),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            env={**os.environ, SECRET_ENV: self.secret},
            limit=256 * 1024 * 1024,  # a report is one line
        )
        try:
            ready = await self._read(timeout=120 + self.clients / 20)
            self.connected = list(ready["connected"])
            print(
                f"bench clients: {len(self.connected):,} of {self.clients:,} connected, {ready['failed']} failed",
                file=sys.stderr,
                flush=True,
            )
        except BaseException:
            await self._stop()
            raise
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self._stop()

    async def ask(self, command: str, *, timeout: float = 60.0) -> dict[str, Any]:
        """Send one command (``messages``, ``stats``) and return the answer."""
        assert self._process is not None and self._process.stdin is not None
        self._process.stdin.write(command.encode() + b"\n")
        await self._process.stdin.drain()
        return await self._read(timeout=timeout)

    async def _read(self, *, timeout: float) -> dict[str, Any]:
        assert self._process is not None and self._process.stdout is not None
        line = await asyncio.wait_for(self._process.stdout.readline(), timeout)
        if not line:
            raise RuntimeError(f"the bench clients exited with {await self._process.wait()}; see stderr")
        answer: dict[str, Any] = orjson.loads(line)
        return answer

    async def _stop(self) -> None:
        process = self._process
        if process is None or process.returncode is not None:
            return
        with contextlib.suppress(ConnectionError):
            assert process.stdin is not None
            process.stdin.write(b"quit\n")
            await process.stdin.drain()
            process.stdin.close()
        try:
            await asyncio.wait_for(process.wait(), 20)
        except TimeoutError:
            process.kill()
            await process.wait()


async def serve(args: argparse.Namespace) -> None:
    secret = os.environ.get(SECRET_ENV, "").encode()
    if not secret:
        raise SystemExit(f"bench clients: set {SECRET_ENV} to the gateway's token secret")
    clients = Clients(
        args.url,
        secret,
        args.clients,
        concurrency=args.concurrency,
        connect_timeout=args.connect_timeout,
        token_ttl_s=int(args.max_seconds) + 60,
    )
    loop = asyncio.get_running_loop()
    stdin = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(stdin), sys.stdin)
    try:
        async with asyncio.timeout(args.max_seconds):
            await clients.open_all()
            clients.gc.start()
            watcher = asyncio.create_task(clients.watch_loop())
            _reply({"ready": True, "connected": sorted(clients.sockets), "failed": clients.failed})
            while line := await stdin.readline():
                match line.strip():
                    case b"messages":
                        _reply(clients.messages())
                    case b"stats":
                        _reply(clients.stats())
                    case b"quit":
                        break
                    case other:
                        _reply({"error": f"unknown command {other.decode(errors='replace')!r}"})
            watcher.cancel()
    finally:
        await clients.close_all()


def _reply(value: dict[str, Any]) -> None:
    sys.stdout.buffer.write(orjson.dumps(value) + b"\n")
    sys.stdout.buffer.flush()


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m app.bench_clients", description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", required=True, help="the gateway's websocket URL, e.g. ws://127.0.0.1:8765/v1/ws")
    parser.add_argument("--clients", type=int, required=True, help="sockets to open, one user each")
    parser.add_argument("--concurrency", type=int, default=100, help="handshakes at a time (default 100)")
    parser.add_argument("--connect-timeout", type=float, default=10.0, help="seconds per handshake (default 10)")
    parser.add_argument("--max-seconds", type=float, default=3600.0, help="exit after this long (default 3600)")
    uvloop.run(serve(parser.parse_args(argv)))


if __name__ == "__main__":
    main()
