"""One frozen settings object, read from the environment once at the entry point.

Everything below ``app/`` receives a :class:`Settings`; nothing else reads ``os.environ``.
Every variable is listed in the README.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from models.consent import PURPOSES

LOG_LEVELS = ("crit", "error", "warn", "info", "debug")
LOG_FORMATS = ("text", "json")
CLOCKS = ("wall", "event")
INTENT_MODELS = ("logistic", "forest")
MIN_SECRET_LENGTH = 16
#: Partitions per Nudge topic unless NUDGE_PARTITIONS says otherwise; the dev stack and the benches use it too.
DEFAULT_PARTITIONS = 8
#: How long the collector and the gateway gather a partition's events into one batch envelope; the benches produce
#: as they do.
DEFAULT_COLLECTOR_LINGER_MS = 5
#: The collector's rate limit per write key and worker process (``app.ratelimit``): 2.5 times the project's goal of
#: 20,000 events/s, several times what one worker ingests (about 6,000), so no legitimate sender meets it. A burst
#: above the largest corpus any tool sends through the collector in one go (the REES46 replay: 17,434 events), so
#: benches, demos and tests never do either; a runaway client is still held to a ceiling.
DEFAULT_COLLECTOR_RATE = 50_000
DEFAULT_COLLECTOR_BURST = 100_000
Role = Literal["worker", "gateway"]
_FIELD_PATH = re.compile(r"^(traits|context|properties)(\.[A-Za-z0-9_$-]{1,64}){1,2}$")
_ORIGIN = re.compile(r"^https?://[A-Za-z0-9.\-\[\]:]+$")
_WEB_URL = re.compile(r"^https?://[A-Za-z0-9.\-\[\]:]+/?$")
_TOPIC = re.compile(r"^[A-Za-z0-9._-]{1,249}$")
REDIS_SCHEMES = ("redis://", "rediss://", "unix://")
#: Every ``NUDGE_*`` variable :meth:`Settings.from_env` reads (``tests/unit/test_settings.py`` checks the list).
SETTINGS_VARIABLES = frozenset(
    {
        "NUDGE_API_KEYS",
        "NUDGE_APP_ID",
        "NUDGE_AUDIT_TOPIC",
        "NUDGE_CLOCK",
        "NUDGE_COLLECTOR_BURST",
        "NUDGE_COLLECTOR_LINGER_MS",
        "NUDGE_COLLECTOR_RATE",
        "NUDGE_CONTENT_FILE",
        "NUDGE_DATA_DIR",
        "NUDGE_DEFAULT_CONSENT",
        "NUDGE_DEMO_STORE",
        "NUDGE_DLQ_TOPIC",
        "NUDGE_EMBEDDED_BROKER",
        "NUDGE_EVENTS_TOPIC",
        "NUDGE_INTENT_MODEL",
        "NUDGE_LABEL_HORIZON_S",
        "NUDGE_LOG_FORMAT",
        "NUDGE_LOG_LEVEL",
        "NUDGE_MESSAGES_TOPIC",
        "NUDGE_NODE_ID",
        "NUDGE_PARTITIONS",
        "NUDGE_PERSONAL_FIELDS",
        "NUDGE_PRODUCER_LINGER_MS",
        "NUDGE_READ_MODEL_TTL_S",
        "NUDGE_SECRET",
        "NUDGE_SEGMENTS_FILE",
        "NUDGE_SEGMENTS_TOPIC",
        "NUDGE_SESSION_TIMEOUT_S",
        "NUDGE_STORE",
        "NUDGE_TRIGGERS_FILE",
        "NUDGE_WEB_HOST",
        "NUDGE_WEB_PORT",
        "NUDGE_WEB_URL",
        "NUDGE_WRITE_KEYS",
        "NUDGE_WS_HOST",
        "NUDGE_WS_ORIGINS",
        "NUDGE_WS_PORT",
    }
)
#: ``NUDGE_*`` variables read by the project's tooling, not by :class:`Settings`: the browser tests' Chromium, the fuzz
#: suite's size, the browser bench's token secret and the command line's default write key. Any other unknown
#: ``NUDGE_*`` variable is a typo that would silently do nothing, so :meth:`Settings.from_env` refuses it.
TOOLING_VARIABLES = frozenset({"NUDGE_CHROMIUM", "NUDGE_FUZZ_EXAMPLES", "NUDGE_BENCH_SECRET", "NUDGE_WRITE_KEY"})
#: Hosts that mean "every interface" to a listener and nothing to a client.
WILDCARD_HOSTS = frozenset({"0.0.0.0", "::", "[::]"})


class SettingsError(ValueError):
    """An environment variable is missing or malformed; the message names it."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Settings:
    """Configuration of a worker, the collector and the command line tools."""

    # Broker: ``None`` means "start the embedded development stack".
    broker_url: str | None = None
    #: True when the broker is the embedded Tansu: turns on ``app.tansu_compat``.
    embedded_broker: bool = False
    redis_url: str | None = None
    store: str = "memory://"
    data_dir: str = "var/nudge"
    app_id: str = "nudge"
    partitions: int = DEFAULT_PARTITIONS
    events_topic: str = "nudge.events"
    dlq_topic: str = "nudge.events.dlq"
    segments_topic: str = "nudge.segments"
    web_host: str = "127.0.0.1"
    web_port: int = 6066
    #: How other workers reach this one (Faust's table routing); ``http://{web_host}:{web_port}`` unless set.
    advertised_web_url: str | None = None
    #: Segment write keys accepted by the collector (HTTP Basic user).
    write_keys: frozenset[str] = frozenset()
    #: Keys for the read API (``Authorization: Bearer <key>``).
    api_keys: frozenset[str] = frozenset()
    session_timeout_s: float = 10.0
    #: How long the worker's producer lets changelog writes gather into batches. Decision and withdrawal records
    #: leave without it (app.send_now).
    producer_linger_ms: int = 10
    collector_linger_ms: int = DEFAULT_COLLECTOR_LINGER_MS
    #: Events a second each write key may send to this worker's collector (0: no limit); past it, 429.
    collector_rate: int = DEFAULT_COLLECTOR_RATE
    #: Events a write key may send at once after a quiet spell; a larger batch can never pass (413: split it).
    collector_burst: int = DEFAULT_COLLECTOR_BURST
    log_level: str = "info"
    #: ``text``, or ``json``: one JSON object per log line (``app.logs``).
    log_format: str = "text"
    #: Signs model snapshots and websocket tokens. Required; at least 16 characters.
    secret: str = ""
    segments_file: str = "segments.yaml"
    content_file: str = "content.yaml"
    triggers_file: str = "triggers.yaml"
    messages_topic: str = "nudge.messages"
    #: Who asked for what about whom: consent changes, exports (and, later, erasures), without personal data.
    audit_topic: str = "nudge.audit"
    #: Dotted paths encrypted per user at the edge, beyond ``app.pii.PERSONAL_FIELDS`` (e.g. ``traits.birthday``).
    personal_fields: tuple[str, ...] = ()
    #: Purposes a user has consented to until they say otherwise (empty: opt-in, the EU-style default).
    default_consent: frozenset[str] = frozenset()
    #: A scored moment is a positive if the user buys within this many seconds.
    label_horizon_s: int = 1800
    #: ``event``: labels and time windows follow each partition's latest event time, running on with the wall clock
    #: between events (right live and during replays); ``wall``: the wall clock only. See ``app.deadlines``.
    clock: str = "event"
    intent_model: str = "logistic"
    #: Expiry of a user's entry in the Redis read model after its last change.
    read_model_ttl_s: int = 7 * 86400
    # The websocket gateway (``nudge gateway``, Procfile ``ws``).
    ws_host: str = "127.0.0.1"
    ws_port: int = 6070
    #: Browser origins allowed to open a websocket (exact ``scheme://host[:port]``); empty: the gateway's own.
    ws_origins: frozenset[str] = frozenset()
    #: Names this gateway in Redis presence and its pub/sub channel; empty: ``<hostname>-<pid>``.
    node_id: str = ""
    #: Serve the demo store at ``/store/``, with a session endpoint that hands out tokens for ``demo-*`` users.
    #: Development only: it lets anyone act as any ``demo-*`` user.
    demo_store: bool = False

    @classmethod
    def from_env(cls, env: Mapping[str, str], role: Role = "worker") -> Settings:
        """Read every ``KAFKA_*``, ``REDIS_URL`` and ``NUDGE_*`` variable; raise on a malformed one, and on a
        ``NUDGE_*`` one that is neither a setting nor in :data:`TOOLING_VARIABLES` (a typo would do nothing).

        ``role`` picks the checks: a gateway needs no collector or API keys.
        """
        _refuse_unknown_variables(env)
        defaults = cls()
        broker = env.get("KAFKA_BROKER_URL") or None
        values = {
            "broker_url": broker,
            "embedded_broker": _flag(env, "NUDGE_EMBEDDED_BROKER", defaults.embedded_broker),
            "redis_url": env.get("REDIS_URL") or None,
            "store": env.get("NUDGE_STORE") or defaults.store,
            "data_dir": env.get("NUDGE_DATA_DIR") or defaults.data_dir,
            "app_id": env.get("NUDGE_APP_ID") or defaults.app_id,
            "partitions": _int(env, "NUDGE_PARTITIONS", defaults.partitions, low=1, high=1024),
            "events_topic": env.get("NUDGE_EVENTS_TOPIC") or defaults.events_topic,
            "dlq_topic": env.get("NUDGE_DLQ_TOPIC") or defaults.dlq_topic,
            "segments_topic": env.get("NUDGE_SEGMENTS_TOPIC") or defaults.segments_topic,
            "web_host": env.get("NUDGE_WEB_HOST") or defaults.web_host,
            "web_port": _int(env, "NUDGE_WEB_PORT", defaults.web_port, low=1, high=65535),
            "advertised_web_url": env.get("NUDGE_WEB_URL") or None,
            "write_keys": _keys(env, "NUDGE_WRITE_KEYS"),
            "api_keys": _keys(env, "NUDGE_API_KEYS"),
            "session_timeout_s": _float(env, "NUDGE_SESSION_TIMEOUT_S", defaults.session_timeout_s),
            "producer_linger_ms": _int(env, "NUDGE_PRODUCER_LINGER_MS", defaults.producer_linger_ms, 0, 1000),
            "collector_linger_ms": _int(env, "NUDGE_COLLECTOR_LINGER_MS", defaults.collector_linger_ms, 0, 1000),
            "collector_rate": _int(env, "NUDGE_COLLECTOR_RATE", defaults.collector_rate, 0, 10_000_000),
            "collector_burst": _int(env, "NUDGE_COLLECTOR_BURST", defaults.collector_burst, 1, 10_000_000),
            "log_level": (env.get("NUDGE_LOG_LEVEL") or defaults.log_level).lower(),
            "log_format": (env.get("NUDGE_LOG_FORMAT") or defaults.log_format).lower(),
            "secret": env.get("NUDGE_SECRET", ""),
            "segments_file": env.get("NUDGE_SEGMENTS_FILE") or defaults.segments_file,
            "content_file": env.get("NUDGE_CONTENT_FILE") or defaults.content_file,
            "triggers_file": env.get("NUDGE_TRIGGERS_FILE") or defaults.triggers_file,
            "messages_topic": env.get("NUDGE_MESSAGES_TOPIC") or defaults.messages_topic,
            "audit_topic": env.get("NUDGE_AUDIT_TOPIC") or defaults.audit_topic,
            "personal_fields": tuple(sorted(_keys(env, "NUDGE_PERSONAL_FIELDS"))),
            "default_consent": _keys(env, "NUDGE_DEFAULT_CONSENT"),
            "label_horizon_s": _int(env, "NUDGE_LABEL_HORIZON_S", defaults.label_horizon_s, 1, 30 * 86400),
            "clock": (env.get("NUDGE_CLOCK") or defaults.clock).lower(),
            "intent_model": (env.get("NUDGE_INTENT_MODEL") or defaults.intent_model).lower(),
            "read_model_ttl_s": _int(env, "NUDGE_READ_MODEL_TTL_S", defaults.read_model_ttl_s, 1, 365 * 86400),
            "ws_host": env.get("NUDGE_WS_HOST") or defaults.ws_host,
            "ws_port": _int(env, "NUDGE_WS_PORT", defaults.ws_port, low=1, high=65535),
            "ws_origins": _keys(env, "NUDGE_WS_ORIGINS"),
            "node_id": env.get("NUDGE_NODE_ID") or defaults.node_id,
            "demo_store": _flag(env, "NUDGE_DEMO_STORE", defaults.demo_store),
        }
        settings = cls(**values)  # type: ignore[arg-type]
        settings.check(role)
        return settings

    def check(self, role: Role = "worker") -> None:
        """Refuse settings a worker (or gateway) must not run with (secure by default: no keys, no service)."""
        if role == "worker" and not self.write_keys:
            raise SettingsError("NUDGE_WRITE_KEYS is empty: set at least one collector write key")
        if role == "worker" and not self.api_keys:
            raise SettingsError("NUDGE_API_KEYS is empty: set at least one read API key")
        bad_field = next((f for f in self.personal_fields if not _FIELD_PATH.match(f)), None)
        if bad_field is not None:
            raise SettingsError(
                f"NUDGE_PERSONAL_FIELDS: {bad_field!r} is not a path like traits.birthday (under traits, context or "
                "properties)"
            )
        bad_origin = next((o for o in sorted(self.ws_origins) if not _ORIGIN.match(o)), None)
        if bad_origin is not None:
            raise SettingsError(f"NUDGE_WS_ORIGINS: {bad_origin!r} is not an origin like https://shop.example:443")
        if self.broker_url is None:
            raise SettingsError("KAFKA_BROKER_URL is not set (use `nudge dev` for the embedded stack)")
        if self.redis_url is None:
            raise SettingsError("REDIS_URL is not set (use `nudge dev` for the embedded stack)")
        if not self.redis_url.startswith(REDIS_SCHEMES):
            raise SettingsError(f"REDIS_URL={self.redis_url!r}: expected a URL like redis://host:6379/0")
        self._check_topics()
        self._check_web_url(role)
        if len(self.secret) < MIN_SECRET_LENGTH:
            raise SettingsError(
                f"NUDGE_SECRET is {'empty' if not self.secret else 'too short'}: set at least "
                f"{MIN_SECRET_LENGTH} random characters (it signs model snapshots and websocket tokens)"
            )
        unknown = sorted(self.default_consent - set(PURPOSES))
        if unknown:
            raise SettingsError(
                f"NUDGE_DEFAULT_CONSENT: unknown purpose {unknown[0]!r}: expected {', '.join(PURPOSES)}"
            )
        if self.clock not in CLOCKS:
            raise SettingsError(f"NUDGE_CLOCK={self.clock!r}: expected one of {', '.join(CLOCKS)}")
        if self.intent_model not in INTENT_MODELS:
            raise SettingsError(f"NUDGE_INTENT_MODEL={self.intent_model!r}: expected one of {', '.join(INTENT_MODELS)}")
        if self.log_level not in LOG_LEVELS:
            raise SettingsError(f"NUDGE_LOG_LEVEL={self.log_level!r}: expected one of {', '.join(LOG_LEVELS)}")
        if self.log_format not in LOG_FORMATS:
            raise SettingsError(f"NUDGE_LOG_FORMAT={self.log_format!r}: expected one of {', '.join(LOG_FORMATS)}")
        if self.store != "memory://":
            # RocksDB picks its per-partition database from Faust's current event, and Nudge also writes tables
            # outside one (when it reads skipped records itself): not supported until that is solved.
            raise SettingsError(
                f"NUDGE_STORE={self.store!r}: only memory:// is supported (tables recover from changelogs)"
            )

    def _check_topics(self) -> None:
        topics = {
            "NUDGE_EVENTS_TOPIC": self.events_topic,
            "NUDGE_DLQ_TOPIC": self.dlq_topic,
            "NUDGE_SEGMENTS_TOPIC": self.segments_topic,
            "NUDGE_MESSAGES_TOPIC": self.messages_topic,
            "NUDGE_AUDIT_TOPIC": self.audit_topic,
        }
        seen: dict[str, str] = {}
        for name, topic in topics.items():
            if not _TOPIC.match(topic) or topic in {".", ".."}:
                raise SettingsError(f"{name}={topic!r}: a Kafka topic name is 1-249 of A-Z, a-z, 0-9, '.', '_', '-'")
            if topic in seen:
                raise SettingsError(f"{name}={topic!r}: {seen[topic]} names the same topic; each needs its own")
            seen[topic] = name

    def _check_web_url(self, role: Role) -> None:
        if self.advertised_web_url is not None and not _WEB_URL.match(self.advertised_web_url):
            raise SettingsError(f"NUDGE_WEB_URL={self.advertised_web_url!r}: expected a URL like http://worker-1:6066")
        if role == "worker" and self.advertised_web_url is None and self.web_host in WILDCARD_HOSTS:
            raise SettingsError(
                f"NUDGE_WEB_HOST={self.web_host!r} listens on every interface but is no address other workers "
                "can reach this one at: set NUDGE_WEB_URL to this worker's own address, "
                f"e.g. http://worker-1:{self.web_port}"
            )

    def replace(self, **changes: object) -> Settings:
        """Return a copy with ``changes`` applied."""
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]

    @property
    def bootstrap_servers(self) -> str:
        """``KAFKA_BROKER_URL`` as aiokafka wants it: ``host:port,host:port``."""
        assert self.broker_url is not None
        return self.broker_url.removeprefix("kafka://").replace(";", ",")

    @property
    def label_horizon_ms(self) -> int:
        return self.label_horizon_s * 1000

    @property
    def web_url(self) -> str:
        """Where other workers and tools reach this worker's HTTP server."""
        return self.advertised_web_url or f"http://{self.web_host}:{self.web_port}"

    @property
    def all_personal_fields(self) -> tuple[str, ...]:
        from app.pii import PERSONAL_FIELDS

        return tuple(dict.fromkeys((*PERSONAL_FIELDS, *self.personal_fields)))

    @property
    def ws_url(self) -> str:
        return f"http://{self.ws_host}:{self.ws_port}"


def _refuse_unknown_variables(env: Mapping[str, str]) -> None:
    """Raise :class:`SettingsError` for a ``NUDGE_*`` variable that nothing reads, naming the closest known one."""
    known = SETTINGS_VARIABLES | TOOLING_VARIABLES
    unknown = sorted(name for name in env if name.startswith("NUDGE_") and name not in known)
    if not unknown:
        return
    # Matched without the prefix every name shares, which would make any two names look alike.
    close = difflib.get_close_matches(unknown[0].removeprefix("NUDGE_"), [k.removeprefix("NUDGE_") for k in known], n=1)
    hint = f"did you mean NUDGE_{close[0]}?" if close else "see the README's Configuration section"
    raise SettingsError(f"{unknown[0]} is not a Nudge setting: {hint}")


def _flag(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    if raw.lower() in {"1", "true", "yes", "on"}:
        return True
    if raw.lower() in {"0", "false", "no", "off"}:
        return False
    raise SettingsError(f"{name}={raw!r}: expected 1/0, true/false, yes/no or on/off")


def _int(env: Mapping[str, str], name: str, default: int, low: int, high: int) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(f"{name}={raw!r}: expected a whole number") from None
    if not low <= value <= high:
        raise SettingsError(f"{name}={value}: expected {low}..{high}")
    return value


def _float(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise SettingsError(f"{name}={raw!r}: expected a number") from None
    if not math.isfinite(value) or value <= 0:
        raise SettingsError(f"{name}={raw!r}: expected a positive, finite number")
    return value


def _keys(env: Mapping[str, str], name: str) -> frozenset[str]:
    return frozenset(k.strip() for k in env.get(name, "").split(",") if k.strip())
