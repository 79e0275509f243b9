"""The soak's memory verdict: flat memory is levelled, memory still growing in the second half is not, and a run too
short to tell says so; the broker's growth (memory-only by design) is reported but not judged."""

from __future__ import annotations

from app.bench_soak_report import memory_note, memory_report


def samples(minutes: float, rss: dict[str, tuple[float, float]]) -> list[tuple[float, dict[str, float]]]:
    """Every 10 s: each process at its start MB plus its growth (MB/min) times the minutes elapsed."""
    steps = int(minutes * 6)
    return [
        (step * 10.0, {role: start + per_min * step / 6 for role, (start, per_min) in rss.items()})
        for step in range(steps + 1)
    ]


def test_memory_that_grows_while_warming_up_then_stays_flat_is_levelled() -> None:
    warm_then_flat = [
        (at, {"worker": 150 + min(at, 60) / 6, "gateway": 50.0, "broker": 20 + at}) for at, _ in samples(5, {})
    ]
    report = memory_report(warm_then_flat, minutes=5, behind_s=0.05)
    assert report["memory_verdict"]["verdict"] == "levelled" and report["memory_verdict"]["levelled"] is True
    assert (
        report["memory"]["worker"]["first_half_mb_per_min"] > 1 >= report["memory"]["worker"]["second_half_mb_per_min"]
    )
    assert (
        report["memory"]["worker"] | {"start_mb": 150.0, "end_mb": 160.0, "max_mb": 160.0} == report["memory"]["worker"]
    )
    # The broker keeps every record in memory: it grows, is reported as growing, and does not decide the verdict.
    assert report["memory"]["broker"]["second_half_mb_per_min"] == 60 and not report["memory"]["broker"]["levelled"]
    assert memory_note(report) == "memory: levelled (worker +0 MB/min, gateway +0 MB/min over the second half)"


def test_a_worker_still_growing_in_the_second_half_is_not_levelled() -> None:
    report = memory_report(samples(5, {"worker": (150, 3.0), "gateway": (50, 0.0)}), minutes=5, behind_s=None)
    assert report["memory_verdict"] == report["memory_verdict"] | {"verdict": "growing", "levelled": False}
    assert report["memory"]["worker"]["second_half_mb_per_min"] == 3.0
    assert report["memory"]["gateway"]["levelled"]
    assert report["memory_verdict"]["caveat"] is None


def test_growth_while_the_stack_runs_behind_is_still_growth_but_the_backlog_is_named() -> None:
    report = memory_report(samples(5, {"worker": (150, 3.0), "gateway": (50, 0.0)}), minutes=5, behind_s=21.4)
    assert report["memory_verdict"]["verdict"] == "growing"
    assert report["memory_verdict"]["caveat"].startswith("the stack ran 21.4 s behind at the end")
    assert memory_note(report).endswith("; 21 s behind at the end")


def test_a_run_under_two_minutes_is_too_short_to_judge_even_when_flat() -> None:
    report = memory_report(samples(1.5, {"worker": (150, 0.0), "gateway": (50, 0.0)}), minutes=1.5, behind_s=None)
    assert report["memory_verdict"]["verdict"] == "too short" and report["memory_verdict"]["levelled"] is None
    assert report["memory"]["worker"]["second_half_mb_per_min"] == 0
