"""What a delivery fault's run ended with, and the comparison of the fault-free and the faulty run (pure).

:mod:`app.faults_delivery` plays the runs and reads their :class:`Outcome`; :func:`compare_runs` turns the two into
the fault's :class:`app.faults.FaultReport`: what was lost, doubled or delayed, and every difference found.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson

from app.faults import FaultReport
from app.faults_stream import Plan
from app.percentiles import nearest_rank

#: A pop-up this much later than in the fault-free run was delayed by the fault (see app.faults_delivery).
DELAYED_BY_S = 1.0
#: Latency of the other users with a silent client: at most this many times the fault-free p99, plus DELAYED_BY_S.
LATENCY_FACTOR = 3.0
#: Recovery slower than this is reported as a difference: "bounded recovery time".
MAX_RECOVERY_S = 45.0
#: A gateway whose peak RSS grows more than this over the fault-free run's did not stay bounded.
MAX_EXTRA_RSS_MB = 64.0


@dataclass
class Outcome:
    """What one run ended with."""

    #: (user, message id) -> how many times it was shown as a pop-up.
    shown: dict[tuple[str, str], int]
    socket_frames: int
    socket_duplicates: int
    #: Per pop-up: user, message id, receive time of its first frame, seconds since its event was produced.
    latencies: list[tuple[str, str, float, float]]
    #: Decisions on nudge.messages: id -> (user, outcome).
    decisions: dict[str, tuple[str, str]]
    #: When the worker produced each decision record (its Kafka timestamp, unix seconds), by id.
    decided_at: dict[str, float]
    profiles: dict[str, Any]
    models: dict[str, Any]
    gateways: list[dict[str, Any]]
    peak_rss_mb: float
    #: Messages left in the inboxes of users whose tabs ack everything: acks that never reached Redis.
    inbox_left: int
    #: When the fault struck (unix seconds), if there was one.
    fault_time: float | None = None
    details: dict[str, Any] = field(default_factory=dict)


# -- comparing the two runs ------------------------------------------------------------------------------------------


def compare_runs(stream: Plan, baseline: Outcome, faulty: Outcome) -> FaultReport:
    diff: dict[str, Any] = {}
    clean_shown, fault_shown = set(baseline.shown), set(faulty.shown)
    sent = {(user, message_id) for message_id, (user, outcome) in baseline.decisions.items() if outcome == "sent"}
    if clean_shown != sent:
        diff["fault_free_run_itself"] = {
            "sent_not_shown": len(sent - clean_shown),
            "shown_not_sent": len(clean_shown - sent),
        }
    lost_pops = sorted(clean_shown - fault_shown)
    extra_pops = sorted(fault_shown - clean_shown)
    if lost_pops or extra_pops:
        diff["pop_ups"] = {"lost": [list(p) for p in lost_pops[:10]], "extra": [list(p) for p in extra_pops[:10]]}
    decisions_lost = sorted(baseline.decisions.keys() - faulty.decisions.keys())
    decisions_extra = sorted(faulty.decisions.keys() - baseline.decisions.keys())
    changed = [
        d for d in baseline.decisions.keys() & faulty.decisions.keys() if baseline.decisions[d] != faulty.decisions[d]
    ]
    if decisions_lost or decisions_extra or changed:
        diff["decisions"] = {"lost": decisions_lost[:10], "extra": decisions_extra[:10], "changed": changed[:10]}
    events_lost = events_doubled = 0
    profiles_differ = []
    for user in stream.users:
        clean, hurt = baseline.profiles.get(user), faulty.profiles.get(user)
        if clean != hurt:
            profiles_differ.append(user)
            before, after = event_total(clean), event_total(hurt)
            events_lost += max(0, before - after)
            events_doubled += max(0, after - before)
    if profiles_differ:
        diff["profiles"] = {
            "count": len(profiles_differ),
            "first": {
                user: _changes(baseline.profiles.get(user), faulty.profiles.get(user)) for user in profiles_differ[:3]
            },
        }
    if baseline.models != faulty.models:
        diff["model_versions"] = {"fault_free": baseline.models, "faulty": faulty.models}
    clean_latency = [latency for *_, latency in baseline.latencies]
    recovery, delayed = _recovery_s(stream, baseline, faulty)
    if recovery > MAX_RECOVERY_S:
        diff["recovery"] = f"took {recovery:.1f} s, over the {MAX_RECOVERY_S:.0f} s bound"
    details: dict[str, Any] = {
        "compared": "pop-ups shown per (user, message id); decisions (id, outcome) on nudge.messages; every "
        "stream user's profile without rfm and category_affinity; model version per partition",
        "users": len(stream.users),
        "probes": stream.probes,
        "rate": stream.rate,
        "fault_at_event": stream.fault_at,
        "pop_ups": {"fault_free": len(clean_shown), "faulty": len(fault_shown), "lost": len(lost_pops)},
        "socket_frames": {"fault_free": baseline.socket_frames, "faulty": faulty.socket_frames},
        "socket_duplicates": {"fault_free": baseline.socket_duplicates, "faulty": faulty.socket_duplicates},
        "duplicate_pops_after_sdk_dedupe": sum(count - 1 for count in faulty.shown.values()),
        "decisions": {"fault_free": len(baseline.decisions), "faulty": len(faulty.decisions)},
        # Acked but still in the inbox: replayed on the user's next socket, where the SDK drops them by id.
        "inbox_entries_left": {"fault_free": baseline.inbox_left, "faulty": faulty.inbox_left},
        "events_lost": events_lost,
        "events_doubled": events_doubled,
        "latency_ms": {"fault_free": _summary(clean_latency), "faulty": _summary([x for *_, x in faulty.latencies])},
        "delayed_pop_ups": delayed,
        # Where the time went: the worker (event -> decision record) or delivery (decision record -> tab).
        "hops_ms": {"fault_free": _hops(baseline), "faulty": _hops(faulty)},
        "gateway_peak_rss_mb": {"fault_free": baseline.peak_rss_mb, "faulty": faulty.peak_rss_mb},
        "gateways": [_gateway_counts(h) for h in faulty.gateways],
        **faulty.details,
    }
    _fault_specific(stream, baseline, faulty, details, diff)
    if diff:
        details["diff"] = diff
    return FaultReport(
        fault=stream.fault,
        events=len(stream.events),
        lost=len(lost_pops) + len(decisions_lost) + events_lost,
        doubled=len(decisions_extra) + events_doubled,
        duplicate_pops=details["duplicate_pops_after_sdk_dedupe"],
        recovery_s=round(recovery, 2),
        details=details,
    )


def _fault_specific(
    stream: Plan, baseline: Outcome, faulty: Outcome, details: dict[str, Any], diff: dict[str, Any]
) -> None:
    if stream.fault == "redis-restart":
        kept = faulty.details.get("during_outage", {}).get("accepted_probe_events_kept", {})
        if kept.get("accepted") and not kept.get("kept"):
            diff["outage_events"] = "the collector accepted events during the outage that never reached a profile"
        collector = faulty.details.get("during_outage", {}).get("collector", {})
        unclear = {name: answer for name, answer in collector.items() if not _clear_answer(answer)}
        if unclear:
            diff["collector_refusals"] = {"expected": "200, or 503 with a JSON message", "seen": unclear}
        socket = faulty.details.get("during_outage", {}).get("new_socket", {})
        if socket.get("answered") != "pong" and not (socket.get("closed") == 1013 and socket.get("reason")):
            diff["new_socket_during_outage"] = {"expected": "served, or closed 1013 with a reason", "seen": socket}
    if stream.silent_user is not None:
        silent = stream.silent_user
        dropped = sum(int(h.get("dropped_slow", 0)) for h in faulty.gateways)
        details["dropped_slow_sockets"] = dropped
        if dropped != 1:
            diff["dropped_slow"] = f"{dropped} sockets dropped as slow; expected exactly the silent one"
        if faulty.details.get("silent_socket_dropped_after_s") is None:
            diff["silent_socket"] = "the gateway never dropped the socket that does not read"
        # Everyone else: the silent user's pop-ups come from its inbox when it returns, late by design.
        clean_p99 = _percentile([x for user, *_, x in baseline.latencies if user != silent], 0.99)
        fault_p99 = _percentile([x for user, *_, x in faulty.latencies if user != silent], 0.99)
        details["others_p99_ms"] = {"fault_free": round(clean_p99 * 1000, 1), "faulty": round(fault_p99 * 1000, 1)}
        # A loose bar: this machine is shared, so p99s wander between runs; a stalled gateway would pass it by far.
        if fault_p99 > LATENCY_FACTOR * clean_p99 + DELAYED_BY_S:
            diff["latency"] = (
                f"others' p99 {fault_p99 * 1000:.0f} ms with the silent client, {clean_p99 * 1000:.0f} ms without"
            )
        extra_rss = faulty.peak_rss_mb - baseline.peak_rss_mb
        if extra_rss > MAX_EXTRA_RSS_MB:
            diff["gateway_memory"] = f"peak RSS {extra_rss:.0f} MB above the fault-free run's"


def _changes(clean: Any, hurt: Any) -> dict[str, Any]:
    """The top-level fields of two profiles that differ, as ``[fault-free, faulty]``."""
    if not isinstance(clean, dict) or not isinstance(hurt, dict):
        return {"profile": [clean is not None, hurt is not None]}
    return {
        key: [clean.get(key), hurt.get(key)]
        for key in sorted(clean.keys() | hurt.keys())
        if clean.get(key) != hurt.get(key)
    }


def _hops(outcome: Outcome) -> dict[str, dict[str, float]]:
    to_decision, to_tab = [], []
    for _, message_id, received, latency in outcome.latencies:
        decided = outcome.decided_at.get(message_id)
        if decided is not None:
            to_decision.append(decided - (received - latency))
            to_tab.append(received - decided)
    return {"event_to_decision": _summary(to_decision), "decision_to_tab": _summary(to_tab)}


def _clear_answer(answer: dict[str, Any]) -> bool:
    """A collector answer during the outage: accepted, or refused as retryable with the reason."""
    if answer.get("status") == 200:
        return True
    if answer.get("status") != 503:
        return False
    try:
        return bool(orjson.loads(answer.get("body", "")).get("message"))
    except (orjson.JSONDecodeError, AttributeError):
        return False


def _recovery_s(stream: Plan, baseline: Outcome, faulty: Outcome) -> tuple[float, int]:
    """From the fault to the last pop-up it delayed (and to the last reconnect, for a killed gateway); how many.

    The silent user's pop-ups wait in its inbox until it comes back: delayed by design, not counted.
    """
    if faulty.fault_time is None:
        return 0.0, 0
    clean = {message_id: latency for _, message_id, _, latency in baseline.latencies}
    delayed = [
        received
        for user, message_id, received, latency in faulty.latencies
        if user != stream.silent_user
        and received >= faulty.fault_time
        and latency - clean.get(message_id, latency) > DELAYED_BY_S
    ]
    recovered = max(delayed, default=faulty.fault_time) - faulty.fault_time
    return max(recovered, float(faulty.details.get("all_reconnected_s", 0.0))), len(delayed)


def event_total(profile: Any) -> int:
    counts = profile.get("event_counts", {}) if isinstance(profile, dict) else {}
    return sum(int(n) for n in counts.values()) if isinstance(counts, dict) else 0


def _gateway_counts(health: dict[str, Any]) -> dict[str, Any]:
    keys = ("node", "connections", "opened", "pushed", "acked", "dropped_slow", "delivered", "published")
    return {key: health[key] for key in keys if key in health}


def _percentile(values: list[float], q: float) -> float:
    return nearest_rank(sorted(values), q) if values else 0.0


def _summary(seconds: list[float]) -> dict[str, float]:
    return {
        "p50": round(_percentile(seconds, 0.5) * 1000, 1),
        "p99": round(_percentile(seconds, 0.99) * 1000, 1),
        "max": round(max(seconds, default=0.0) * 1000, 1),
    }
