"""The pure parts of metrics and logs: reason labels, consumer lag, the exposition, ``/metrics`` routing and auth,
JSON log lines. No server, no broker."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from app.intake import HttpError, batch_events, check_write_key, parse_body
from app.metrics import (
    CONTENT_TYPE,
    REJECT_REASONS,
    GatewayReading,
    WorkerMetrics,
    WorkerReading,
    consumer_lag,
    exposition,
    gateway_registry,
    reject_reason,
)
from app.ratelimit import RateLimit, RateLimiter
from app.records import split_record
from app.settings import Settings, SettingsError
from ws.routes import Respond, Routes

NOW_MS = 1_800_000_000_000
STAMP = "2026-11-20T10:00:00.000Z"


def dead_letter_reason(value: bytes | None) -> str:
    """The ``nudge-reason`` ingest would put on the dead-letter record of ``value``."""
    [reject] = split_record(value, partition=0, partitions=1, now_ms=NOW_MS, secret=b"s" * 32).rejects
    return reject.reason


def event(**fields: object) -> bytes:
    return orjson.dumps({"type": "track", "userId": "ann", "event": "Viewed", "timestamp": STAMP, **fields})


@pytest.mark.parametrize(
    ("value", "label"),
    [
        (None, "empty"),
        (b"", "not_json"),
        (b"not json", "not_json"),
        (b'{"batch": 5}', "shape"),
        (b"[1, 2]", "shape"),
        (b'"a string"', "shape"),
        (b'{"type": "track", "event": "Viewed"}', "no_user"),
        (event(type="click"), "type"),
        (event(event=""), "event_name"),
        (event(timestamp="yesterday"), "timestamp"),
        (event(timestamp="2999-01-01T00:00:00Z"), "timestamp"),
        (event(messageId=""), "message_id"),
        (event(userId=7), "shape"),
        (event(userId="x" * 1000), "too_long"),
        (event(properties=[1]), "shape"),
        (event(context={"consent": {"categoryPreferences": {"marketing": "yes"}}}), "consent"),
        (event(type="alias", previousId="ann"), "alias"),
        (orjson.dumps({"nudgeMerge": {}, "sig": "forged"}), "merge_record"),
        (orjson.dumps({"nudgeErase": {}, "sig": "forged"}), "erasure_record"),
        (b"{" + b" " * 2_000_000 + b"}", "too_large"),
    ],
)
def test_every_dead_letter_reason_gets_a_label_of_its_kind(value: bytes | None, label: str) -> None:
    assert reject_reason(dead_letter_reason(value)) == label


def test_the_collectors_refusals_get_labels_of_their_kind() -> None:
    refusals = {}
    for refuse in (
        lambda: check_write_key("", {}, {"wk"}),
        lambda: check_write_key("Basic d3Jvbmc6", {}, {"wk"}),
        lambda: parse_body(b"{oops"),
        lambda: batch_events({"batch": 5}, now_ms=NOW_MS),
    ):
        with pytest.raises(HttpError) as refused:
            refuse()
        refusals[str(refused.value)] = reject_reason(str(refused.value))
    _, rejected = batch_events({"batch": [{"type": "track", "event": "x"}, 5]}, now_ms=NOW_MS)
    refusals.update((r["message"], reject_reason(r["message"])) for r in rejected)
    assert sorted(refusals.values()) == ["no_user", "not_json", "shape", "shape", "write_key", "write_key"]


def test_rate_limit_refusals_are_labelled_rate_limited() -> None:
    limiter = RateLimiter(RateLimit(rate=10, burst=20))
    over_burst = limiter.admit("wk", 21, now_s=0.0)
    assert limiter.admit("wk", 20, now_s=0.0) is None
    over_rate = limiter.admit("wk", 1, now_s=0.0)
    assert over_burst is not None and over_rate is not None
    assert {reject_reason(over_burst.message), reject_reason(over_rate.message)} == {"rate_limited"}
    assert "rate_limited" in REJECT_REASONS


def test_reason_labels_stay_in_a_fixed_set_whatever_the_message_quotes() -> None:
    assert reject_reason("something nobody wrote yet") == "invalid"
    assert reject_reason("userId is not a user 'ann@example.com'") == "invalid"
    messages = [dead_letter_reason(event(timestamp=f"day {n}")) for n in range(50)]
    assert {reject_reason(m) for m in messages} == {"timestamp"}
    assert "invalid" in REJECT_REASONS and len(REJECT_REASONS) == len(set(REJECT_REASONS))


def test_consumer_lag_is_what_is_left_per_partition_and_absent_when_unknown() -> None:
    highwaters = {0: 120, 1: 50, 2: None, 3: 10}
    positions = {0: 100, 1: 50, 2: 7, 3: None}
    assert consumer_lag(highwaters, positions) == {0: 20, 1: 0}
    # A position ahead of a stale high watermark is no negative lag.
    assert consumer_lag({0: 5}, {0: 9}) == {0: 0}
    assert consumer_lag({}, {0: 3}) == {}


def parsed(text: bytes) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text.decode())
        for sample in family.samples
    }


def test_a_workers_exposition_carries_live_counters_histograms_and_what_is_read_at_scrape() -> None:
    metrics = WorkerMetrics()
    lag = {3: 0, 1: 12}
    metrics.read_at_scrape(
        lambda: WorkerReading(
            records=4,
            folded=30,
            duplicates=2,
            forwarded=1,
            segment_changes=5,
            read_model_writes=6,
            profiles=9,
            partitions_held=2,
            lag=lag,
        )
    )
    metrics.events_in_topic.inc(33)
    metrics.rejected("ingest", "record is not valid JSON: unexpected character")
    metrics.rejected("collector", "unknown write key", count=2)
    metrics.decided("cart_idle", "suppressed", "holdout")
    metrics.decided("cart_idle", "sent", None)
    metrics.fold_seconds.observe(0.0003)
    samples = parsed(metrics.exposition())

    assert samples[("nudge_events_in_total", frozenset({("source", "topic")}))] == 33
    assert samples[("nudge_events_rejected_total", frozenset({("stage", "ingest"), ("reason", "not_json")}))] == 1
    assert samples[("nudge_events_rejected_total", frozenset({("stage", "collector"), ("reason", "write_key")}))] == 2
    sent = {("trigger", "cart_idle"), ("outcome", "sent"), ("reason", "none")}
    assert samples[("nudge_triggers_total", frozenset(sent))] == 1
    assert samples[("nudge_fold_seconds_count", frozenset())] == 1
    assert samples[("nudge_fold_seconds_bucket", frozenset({("le", "0.0005")}))] == 1
    assert samples[("nudge_fold_seconds_bucket", frozenset({("le", "0.00025")}))] == 0
    assert samples[("nudge_records_total", frozenset())] == 4
    assert samples[("nudge_events_folded_total", frozenset())] == 30
    assert samples[("nudge_consumer_lag", frozenset({("partition", "1")}))] == 12
    # Read at each scrape, not copied at registration.
    lag[1] = 0
    assert parsed(metrics.exposition())[("nudge_consumer_lag", frozenset({("partition", "1")}))] == 0


def gateway_reading(**changes: Any) -> GatewayReading:
    counts: dict[str, Any] = {**dict.fromkeys(GatewayReading.__dataclass_fields__, 0), "lag": {}, "inbox_skipped": {}}
    return GatewayReading(**{**counts, **changes})


def test_a_gateways_exposition_is_read_from_its_counters_at_scrape() -> None:
    reading = gateway_reading(
        sockets_open=3,
        pushed=7,
        acked=5,
        tracked=11,
        suppressed=2,
        lag={0: 0, 3: 40},
        inbox_skipped={"not_json": 4, "shape": 0},
    )
    samples = parsed(exposition(gateway_registry(lambda: reading)))
    assert samples[("nudge_deliverer_lag", frozenset({("partition", "3")}))] == 40
    assert samples[("nudge_deliverer_lag", frozenset({("partition", "0")}))] == 0
    assert ("nudge_deliverer_lag", frozenset({("partition", "1")})) not in samples  # not known: absent
    assert samples[("nudge_sockets_open", frozenset())] == 3
    assert samples[("nudge_pushes_delivered_total", frozenset())] == 7
    assert samples[("nudge_pushes_acked_total", frozenset())] == 5
    assert samples[("nudge_events_in_total", frozenset({("source", "websocket")}))] == 11
    assert samples[("nudge_decisions_not_pushed_total", frozenset({("reason", "suppressed")}))] == 2
    assert samples[("nudge_inbox_entries_skipped_total", frozenset({("reason", "not_json")}))] == 4
    assert samples[("nudge_inbox_entries_skipped_total", frozenset({("reason", "shape")}))] == 0
    # Two registries in one process (two gateways in a test) do not clash.
    assert parsed(exposition(gateway_registry(gateway_reading)))[("nudge_sockets_open", frozenset())] == 0


def gateway_routes(api_keys: frozenset[str]) -> Routes:
    return Routes(secret=b"s" * 32, demo_store=False, stats=dict, api_keys=api_keys, metrics=lambda: b"# metrics\n")


@pytest.mark.parametrize("authorization", [None, "", "Bearer", "Bearer ak_wrong", "Basic ak_1", "ak_1"])
def test_the_gateways_metrics_need_a_known_api_key(authorization: str | None) -> None:
    headers = {} if authorization is None else {"Authorization": authorization}
    route = gateway_routes(frozenset({"ak_1"})).handle("/metrics", headers, 0.0)
    assert isinstance(route, Respond) and route.status == 401


def test_the_gateway_serves_metrics_with_a_known_key_and_nobody_when_it_has_none() -> None:
    route = gateway_routes(frozenset({"ak_0", "ak_1"})).handle("/metrics", {"Authorization": "bearer ak_1"}, 0.0)
    assert route == Respond(200, b"# metrics\n", CONTENT_TYPE, {"Cache-Control": "no-store"})
    assert CONTENT_TYPE.startswith("text/plain; version=0.0.4")
    refused = gateway_routes(frozenset()).handle("/metrics", {"Authorization": "Bearer "}, 0.0)
    assert isinstance(refused, Respond) and refused.status == 401


LOGGING_SCRIPT = """
import logging, sys
from app.logs import configure
configure(sys.argv[1], sys.argv[2])
log = logging.getLogger("nudge.test")
log.info("hello %s", "wörld")
log.debug("not shown at info")
try:
    1 / 0
except ZeroDivisionError:
    log.exception("it failed")
"""


def run_logging(level: str, log_format: str) -> list[str]:
    done = subprocess.run(
        [sys.executable, "-c", LOGGING_SCRIPT, level, log_format], capture_output=True, text=True, check=True
    )
    return done.stderr.splitlines()


def test_json_logs_are_one_object_per_line_with_the_traceback_inside() -> None:
    hello, failed = [orjson.loads(line) for line in run_logging("info", "json")]
    assert set(hello) == {"ts", "level", "logger", "message", "process"}
    assert (hello["level"], hello["logger"], hello["message"]) == ("INFO", "nudge.test", "hello wörld")
    assert hello["ts"].endswith("Z") and isinstance(hello["process"], int)
    assert failed["level"] == "ERROR" and failed["message"] == "it failed"
    assert failed["exc"].startswith("Traceback") and "ZeroDivisionError" in failed["exc"]


def test_text_logs_keep_the_readable_format() -> None:
    lines = run_logging("warn", "text")
    assert "[ERROR] nudge.test: it failed" in lines[0]
    assert not any("hello" in line for line in lines)  # info is below warn
    assert any(line.startswith("ZeroDivisionError") for line in lines)


def test_the_log_format_setting_is_validated() -> None:
    env = {
        "NUDGE_WRITE_KEYS": "wk",
        "NUDGE_API_KEYS": "ak",
        "KAFKA_BROKER_URL": "kafka://127.0.0.1:9092",
        "REDIS_URL": "redis://127.0.0.1:6379",
        "NUDGE_SECRET": "s" * 16,
    }
    assert Settings.from_env(env).log_format == "text"
    assert Settings.from_env({**env, "NUDGE_LOG_FORMAT": "JSON"}, role="gateway").log_format == "json"
    with pytest.raises(SettingsError, match="NUDGE_LOG_FORMAT='xml'"):
        Settings.from_env({**env, "NUDGE_LOG_FORMAT": "xml"})
