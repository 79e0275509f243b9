"""The delivery fault suite's verdict: what the comparison of a fault-free and a faulty run calls lost or doubled."""

from __future__ import annotations

import dataclasses
from typing import Any

from app.faults_compare import DELAYED_BY_S, MAX_RECOVERY_S, Outcome, compare_runs
from app.faults_stream import PROBE_EVENT, plan

STREAM = plan("gateway-kill", 200)
USER = STREAM.users[0]


def outcome(**changes: Any) -> Outcome:
    """A fault-free looking run: two pop-ups of USER shown once each, both decided as sent, one profile."""
    clean = Outcome(
        shown={(USER, "m1"): 1, (USER, "m2"): 1},
        socket_frames=2,
        socket_duplicates=0,
        latencies=[(USER, "m1", 100.05, 0.05), (USER, "m2", 101.05, 0.05)],
        decisions={"m1": (USER, "sent"), "m2": (USER, "sent")},
        decided_at={"m1": 100.02, "m2": 101.02},
        profiles={USER: {"event_counts": {PROBE_EVENT: 2, "Product Viewed": 3}}},
        models={"0": "p0.v5"},
        gateways=[{"node": "gw-1", "pushed": 2, "acked": 2}],
        peak_rss_mb=50.0,
        inbox_left=0,
    )
    return dataclasses.replace(clean, **changes)


def test_identical_runs_are_ok() -> None:
    report = compare_runs(STREAM, outcome(), outcome(fault_time=100.5))
    assert report.ok and report.lost == report.doubled == report.duplicate_pops == 0
    assert report.details["pop_ups"] == {"fault_free": 2, "faulty": 2, "lost": 0}


def test_a_pop_up_never_shown_and_never_decided_is_lost_twice() -> None:
    faulty = outcome(shown={(USER, "m1"): 1}, latencies=[(USER, "m1", 100.05, 0.05)], decisions={"m1": (USER, "sent")})
    report = compare_runs(STREAM, outcome(), faulty)
    assert not report.ok and report.lost == 2  # the pop-up, and the decision record behind it
    assert report.details["diff"]["pop_ups"]["lost"] == [[USER, "m2"]]
    assert report.details["diff"]["decisions"]["lost"] == ["m2"]


def test_a_pop_up_shown_twice_and_an_event_counted_twice_are_reported() -> None:
    profiles = {USER: {"event_counts": {PROBE_EVENT: 2, "Product Viewed": 4}}}
    report = compare_runs(STREAM, outcome(), outcome(shown={(USER, "m1"): 2, (USER, "m2"): 1}, profiles=profiles))
    assert not report.ok
    assert report.duplicate_pops == 1 and report.doubled == 1 and report.lost == 0
    assert report.details["diff"]["profiles"]["first"][USER] == {
        "event_counts": [{PROBE_EVENT: 2, "Product Viewed": 3}, {PROBE_EVENT: 2, "Product Viewed": 4}]
    }


def test_recovery_runs_to_the_last_pop_up_the_fault_delayed() -> None:
    late = 0.05 + DELAYED_BY_S + 0.5
    faulty = outcome(latencies=[(USER, "m1", 100.05, 0.05), (USER, "m2", 103.0, late)], fault_time=100.5)
    report = compare_runs(STREAM, outcome(), faulty)
    assert report.ok and report.recovery_s == 2.5
    assert report.details["delayed_pop_ups"] == 1


def test_a_recovery_past_the_bound_is_a_difference() -> None:
    long = 0.05 + MAX_RECOVERY_S + 5
    faulty = outcome(latencies=[(USER, "m1", 100.05, 0.05), (USER, "m2", 101.0 + long, long)], fault_time=100.0)
    report = compare_runs(STREAM, outcome(), faulty)
    assert not report.ok and "over the 45 s bound" in report.details["diff"]["recovery"]
