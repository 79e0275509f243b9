"""The broker bench's summary: medians over runs, including a run that gave up waiting."""

from __future__ import annotations

from app.bench_broker import _medians


def run(p50: float | None, p99: float | None, *, sent: int = 100, received: int = 100) -> dict[str, object]:
    return {"p50_ms": p50, "p99_ms": p99, "max_ms": p99, "broker_cpu_percent": 90.0, "sent": sent, "received": received}


def test_the_medians_are_over_the_runs_that_received_records_and_the_missing_ones_are_counted() -> None:
    summary = _medians([run(None, None, received=0), run(2.0, 4.0, received=60), run(30.0, 39.0)])
    assert (summary["p50_ms"], summary["p99_ms"]) == (16.0, 21.5)
    assert summary["unreceived"] == 140


def test_a_step_where_no_run_received_anything_has_no_latency() -> None:
    summary = _medians([run(None, None, received=0)])
    assert summary["p50_ms"] is None and summary["unreceived"] == 100
