"""Prometheus metrics of a worker and a gateway: every name, type and label, in one place.

Both processes answer ``GET /metrics`` (``Authorization: Bearer <api key>``) in the Prometheus text format. Each
keeps its own :class:`~prometheus_client.CollectorRegistry` (not the library's global one), so tests that build
several gateways in one process never see each other's series.

Two kinds of metric, chosen by what they cost on the hot path (a worker folds about 6,000 events a second):

- counters that already exist as plain integers (``app.stats.IngestStats``, the gateway's ``counts``) are read at
  scrape time, through a reading function the shell passes in (:class:`WorkerReading`, :class:`GatewayReading`):
  nothing is added per event;
- new dimensions (rejects by reason, triggers by outcome) and latencies are live ``prometheus_client`` objects,
  touched once per record or per decision, never per event (an ``observe`` costs about 1 µs).

Worker (:class:`WorkerMetrics`)

=====================================  =========  ===================  =============================================
name                                   type       labels               counts
=====================================  =========  ===================  =============================================
``nudge_events_in_total``              counter    ``source``           ``http``: events the collector accepted;
                                                                       ``topic``: events read from ``nudge.events``
                                                                       by ingest, valid or not, from any producer
``nudge_events_rejected_total``        counter    ``stage``,           ``collector``: events refused at the HTTP
                                                  ``reason``           edge (a request refused whole counts once);
                                                                       ``ingest``: records and events sent to the
                                                                       dead-letter topic. ``reason`` is
                                                                       :func:`reject_reason` of the message
``nudge_events_folded_total``          counter                         events applied to a profile
``nudge_events_duplicate_total``       counter                         events skipped as already applied
``nudge_events_forwarded_total``       counter                         events sent on to the user they belong to:
                                                                       misrouted ones, and those of an id merged
                                                                       into another user (identity)
``nudge_records_total``                counter                         ``nudge.events`` records processed
``nudge_consumer_lag``                 gauge      ``partition``        high watermark minus the next offset this
                                                                       worker will process, per held partition of
                                                                       ``nudge.events`` (absent until known)
``nudge_fold_seconds``                 histogram                       folding one record's events into profiles
``nudge_score_seconds``                histogram                       scoring, segmenting and trigger rules for one
                                                                       record's events (learning included)
``nudge_triggers_total``               counter    ``trigger``,         trigger decisions; ``outcome`` ``sent`` or
                                                  ``outcome``,         ``suppressed``; ``reason`` ``consent``,
                                                  ``reason``           ``cooldown``, ``daily_cap``, ``holdout``, or
                                                                       ``none`` when sent
``nudge_segment_changes_total``        counter                         segment entries and exits emitted
``nudge_read_model_writes_total``      counter                         users written to the Redis read model
``nudge_profiles``                     gauge                           profiles held by this worker
``nudge_partitions_held``              gauge                           ``nudge.events`` partitions held
=====================================  =========  ===================  =============================================

Gateway (:func:`gateway_registry`)

=====================================  =========  ===================  =============================================
``nudge_sockets_open``                 gauge                           websockets open now
``nudge_sockets_opened_total``         counter                         websockets accepted
``nudge_sockets_refused_total``        counter                         websockets closed at once (too many tabs)
``nudge_sockets_dropped_slow_total``   counter                         websockets dropped: their client stopped
                                                                       reading
``nudge_pushes_delivered_total``       counter                         message frames written to sockets (live
                                                                       pushes and inbox replays; not pongs)
``nudge_pushes_acked_total``           counter                         messages acked by a browser (once each)
``nudge_events_in_total``              counter    ``source``           ``websocket``: events browsers sent,
                                                                       produced to ``nudge.events``
``nudge_inbox_writes_total``           counter                         sent decisions written to Redis inboxes
``nudge_node_publishes_total``         counter                         publishes to the nodes holding the sockets
``nudge_deliverer_batches_total``      counter                         batches delivered (one Redis round trip pair)
``nudge_decisions_not_pushed_total``   counter    ``reason``           ``suppressed``, ``stale`` (older than the
                                                                       inbox TTL), ``malformed``
``nudge_inbox_entries_skipped_total``  counter    ``reason``           damaged Redis inbox entries skipped when an
                                                                       inbox is read (each read of one counts):
                                                                       ``not_json``, ``shape``
``nudge_deliverer_partitions``         gauge                           ``nudge.messages`` partitions delivered here
``nudge_deliverer_lag``                gauge      ``partition``        decision records of ``nudge.messages`` not
                                                                       delivered yet, per partition delivered here:
                                                                       high watermark minus the offset after the
                                                                       last batch delivered (absent until known)
=====================================  =========  ===================  =============================================

No label ever holds a user id: every label takes values from a fixed set or from the rule files.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Final

from prometheus_client import CONTENT_TYPE_PLAIN_0_0_4, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric

__all__ = ["CONTENT_TYPE", "GatewayReading", "WorkerMetrics", "WorkerReading", "gateway_registry"]

#: The text format every Prometheus version reads (our names need none of 1.0.0's escaping).
CONTENT_TYPE: Final = CONTENT_TYPE_PLAIN_0_0_4
#: Per record: a record holds one event (other producers) or up to hundreds (the collector's batches).
RECORD_SECONDS_BUCKETS: Final = (
    0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
)  # fmt: skip

#: What a refusal message is about -> its ``reason`` label; the first match wins. The messages themselves
#: (``nudge-reason`` on the dead-letter topic, the collector's 4xx bodies) quote the input, so they cannot be labels.
_REASON_MARKERS: Final = (
    # First: a rate limit refusal also names its write key and counts events.
    ("rate limit", "rate_limited"),
    ("merge record", "merge_record"),
    ("erasure record", "erasure_record"),
    ("consent", "consent"),
    ("categoryPreferences", "consent"),
    ("no value", "empty"),
    ("byte limit", "too_large"),
    ("event limit", "too_large"),
    ("must be a JSON object", "shape"),
    ("JSON", "not_json"),
    ("write key", "write_key"),
    ("timestamp", "timestamp"),
    ("ISO-8601", "timestamp"),
    ("messageId", "message_id"),
    ("userId or anonymousId", "no_user"),
    ("type must be", "type"),
    ("sent to the /v1/", "type"),
    ("event name", "event_name"),
    ("alias event", "alias"),
    ("longer than", "too_long"),
    (" must be ", "shape"),
)
#: Every value :func:`reject_reason` can return.
REJECT_REASONS: Final = (*dict.fromkeys(label for _, label in _REASON_MARKERS), "invalid")


def reject_reason(message: str) -> str:
    """The bounded ``reason`` label of a refusal message (``"invalid"`` when none of the known kinds)."""
    return next((label for marker, label in _REASON_MARKERS if marker in message), "invalid")


def consumer_lag(highwaters: Mapping[int, int | None], positions: Mapping[int, int | None]) -> dict[int, int]:
    """Records left per partition: high watermark minus the next offset to process (never negative).

    A partition whose high watermark (nothing fetched yet) or position (nothing processed or committed here yet) is
    unknown is left out: an absent series is honest, a guess is not.
    """
    lag = {}
    for partition, highwater in highwaters.items():
        position = positions.get(partition)
        if highwater is not None and position is not None:
            lag[partition] = max(0, highwater - position)
    return lag


def exposition(registry: CollectorRegistry) -> bytes:
    """The registry in the Prometheus text format; answer it with ``Content-Type:`` :data:`CONTENT_TYPE`."""
    return generate_latest(registry)


@dataclass(frozen=True, slots=True, kw_only=True)
class WorkerReading:
    """A worker's plain counters, read at scrape time."""

    records: int
    folded: int
    duplicates: int
    forwarded: int
    segment_changes: int
    read_model_writes: int
    profiles: int
    partitions_held: int
    #: Partition -> records left (:func:`consumer_lag`).
    lag: Mapping[int, int]


@dataclass(frozen=True, slots=True, kw_only=True)
class GatewayReading:
    """A gateway's plain counters, read at scrape time."""

    sockets_open: int
    opened: int
    refused: int
    dropped_slow: int
    pushed: int
    acked: int
    tracked: int
    inbox_writes: int
    published: int
    batches: int
    suppressed: int
    stale: int
    malformed: int
    partitions: int
    #: Partition of ``nudge.messages`` -> records not delivered yet (:func:`consumer_lag`).
    lag: Mapping[int, int]
    #: Reason -> damaged inbox entries skipped (``ws.delivery.INBOX_SKIP_REASONS``, each present even at 0).
    inbox_skipped: Mapping[str, int]


class WorkerMetrics:
    """A worker's registry and live metrics. Call :meth:`read_at_scrape` once with the shell's reading function."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.events_in = Counter("nudge_events_in", "Events in, by source.", ("source",), registry=self.registry)
        #: Bound once: ``labels()`` costs about 1 µs, an ``inc`` on a bound child a third of that.
        self.events_in_http = self.events_in.labels(source="http")
        self.events_in_topic = self.events_in.labels(source="topic")
        self.events_rejected = Counter(
            "nudge_events_rejected", "Events refused, by stage and reason.", ("stage", "reason"), registry=self.registry
        )
        self.fold_seconds = Histogram(
            "nudge_fold_seconds",
            "Seconds folding one record's events into profiles.",
            buckets=RECORD_SECONDS_BUCKETS,
            registry=self.registry,
        )
        self.score_seconds = Histogram(
            "nudge_score_seconds",
            "Seconds scoring, segmenting and evaluating triggers for one record's events.",
            buckets=RECORD_SECONDS_BUCKETS,
            registry=self.registry,
        )
        self.triggers = Counter(
            "nudge_triggers",
            "Trigger decisions, by trigger, outcome and suppression reason.",
            ("trigger", "outcome", "reason"),
            registry=self.registry,
        )

    def rejected(self, stage: str, message: str, count: int = 1) -> None:
        """Count ``count`` events refused at ``stage`` (``collector`` or ``ingest``) with this message."""
        self.events_rejected.labels(stage=stage, reason=reject_reason(message)).inc(count)

    def decided(self, trigger: str, outcome: str, reason: str | None) -> None:
        """Count one trigger decision."""
        self.triggers.labels(trigger=trigger, outcome=outcome, reason=reason or "none").inc()

    def read_at_scrape(self, read: Callable[[], WorkerReading]) -> None:
        """Serve the counters ``read`` returns with every scrape (call once)."""
        self.registry.register(_AtScrape(lambda: worker_families(read())))

    def exposition(self) -> bytes:
        return exposition(self.registry)


def worker_families(reading: WorkerReading) -> list[Metric]:
    """The scrape-time metric families of a worker's reading."""
    lag = GaugeMetricFamily(
        "nudge_consumer_lag", "Records of nudge.events left to process, per held partition.", labels=("partition",)
    )
    for partition, left in sorted(reading.lag.items()):
        lag.add_metric((str(partition),), left)
    return [
        _counter("nudge_records", "nudge.events records processed.", reading.records),
        _counter("nudge_events_folded", "Events applied to a profile.", reading.folded),
        _counter("nudge_events_duplicate", "Events skipped as already applied.", reading.duplicates),
        _counter("nudge_events_forwarded", "Events sent on to the user they belong to.", reading.forwarded),
        _counter("nudge_segment_changes", "Segment entries and exits emitted.", reading.segment_changes),
        _counter("nudge_read_model_writes", "Users written to the Redis read model.", reading.read_model_writes),
        GaugeMetricFamily("nudge_profiles", "Profiles held by this worker.", value=reading.profiles),
        GaugeMetricFamily("nudge_partitions_held", "nudge.events partitions held.", value=reading.partitions_held),
        lag,
    ]


def gateway_registry(read: Callable[[], GatewayReading]) -> CollectorRegistry:
    """A gateway's registry: every series is read from ``read`` at scrape time."""
    registry = CollectorRegistry()
    registry.register(_AtScrape(lambda: gateway_families(read())))
    return registry


def gateway_families(reading: GatewayReading) -> list[Metric]:
    """The metric families of a gateway's reading."""
    events_in = CounterMetricFamily("nudge_events_in", "Events in, by source.", labels=("source",))
    events_in.add_metric(("websocket",), reading.tracked)
    not_pushed = CounterMetricFamily(
        "nudge_decisions_not_pushed", "Decisions read from nudge.messages and not pushed.", labels=("reason",)
    )
    for reason, count in (
        ("suppressed", reading.suppressed),
        ("stale", reading.stale),
        ("malformed", reading.malformed),
    ):
        not_pushed.add_metric((reason,), count)
    skipped = CounterMetricFamily(
        "nudge_inbox_entries_skipped", "Damaged inbox entries skipped when reading an inbox.", labels=("reason",)
    )
    for reason, count in sorted(reading.inbox_skipped.items()):
        skipped.add_metric((reason,), count)
    lag = GaugeMetricFamily(
        "nudge_deliverer_lag", "Records of nudge.messages not delivered yet, per partition.", labels=("partition",)
    )
    for partition, left in sorted(reading.lag.items()):
        lag.add_metric((str(partition),), left)
    return [
        GaugeMetricFamily("nudge_sockets_open", "Websockets open now.", value=reading.sockets_open),
        _counter("nudge_sockets_opened", "Websockets accepted.", reading.opened),
        _counter("nudge_sockets_refused", "Websockets closed at once (too many tabs).", reading.refused),
        _counter("nudge_sockets_dropped_slow", "Websockets dropped: the client stopped reading.", reading.dropped_slow),
        _counter("nudge_pushes_delivered", "Message frames written to sockets.", reading.pushed),
        _counter("nudge_pushes_acked", "Messages acked by a browser.", reading.acked),
        events_in,
        _counter("nudge_inbox_writes", "Sent decisions written to Redis inboxes.", reading.inbox_writes),
        _counter("nudge_node_publishes", "Publishes to the nodes holding the sockets.", reading.published),
        _counter("nudge_deliverer_batches", "Batches of decisions delivered.", reading.batches),
        not_pushed,
        skipped,
        GaugeMetricFamily(
            "nudge_deliverer_partitions", "nudge.messages partitions delivered here.", value=reading.partitions
        ),
        lag,
    ]


def _counter(name: str, documentation: str, value: int) -> CounterMetricFamily:
    return CounterMetricFamily(name, documentation, value=value)


class _AtScrape:
    """A collector whose families are computed at each scrape."""

    def __init__(self, families: Callable[[], Iterable[Metric]]) -> None:
        self._families = families

    def collect(self) -> Iterable[Metric]:
        return self._families()
