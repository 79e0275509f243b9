"""What ``nudge bench --soak`` makes of its samples: the memory verdict and the plot. Pure apart from writing the PNG.

The soak samples each process's resident memory (RSS) at the start and at the end of every interval. Memory has
levelled off when it no longer grows: the verdict fits a straight line (least squares) through the samples of each
half of the run and compares the slopes, in MB per minute. The first half holds the warm-up of caches and tables;
the second half is the one that must be flat. A run shorter than ``MIN_VERDICT_MINUTES`` has too few samples per
half to tell noise from growth, and says so instead of judging.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

#: Below this, a run cannot show levelling: each half is too short to tell a trend from the allocator's noise.
MIN_VERDICT_MINUTES = 2.0
#: RSS growth over the second half (least-squares slope) at or below this counts as levelled: about what a few MB
#: of allocator noise looks like over a few minutes, and 60 MB an hour at worst.
LEVEL_MB_PER_MIN = 1.0
#: The processes the verdict judges: Nudge's own. The embedded broker (Tansu) is memory-only, so it holds every
#: record produced and grows with the topics by design; the clients are the load generator. Both are reported.
JUDGED = ("worker", "gateway")
#: A stack this far behind at the end holds the backlog in its buffers: growth may be backlog rather than a leak.
BEHIND_CAVEAT_S = 1.0


def memory_report(
    samples: Sequence[tuple[float, Mapping[str, float]]], *, minutes: float, behind_s: float | None
) -> dict[str, Any]:
    """``memory``: per process, RSS at start, end and max (MB) and the growth over each half of the run (MB/min);
    ``memory_verdict``: levelled or growing over :data:`JUDGED`, or too short to tell, with a caveat when the stack
    ran ``behind_s`` (the last interval's median event -> browser latency) or more behind at the end. ``samples``
    are (seconds since the start, RSS MB by process), oldest first."""
    duration_s = samples[-1][0] if samples else 0.0
    processes: dict[str, Any] = {}
    for role in sorted({role for _, rss in samples for role in rss}):
        points = [(at, rss[role]) for at, rss in samples if role in rss]
        first = [(at, mb) for at, mb in points if at <= duration_s / 2]
        second = [(at, mb) for at, mb in points if at >= duration_s / 2]
        growth_first, growth_second = _slope_per_min(first), _slope_per_min(second)
        processes[role] = {
            "start_mb": points[0][1],
            "end_mb": points[-1][1],
            "max_mb": max(mb for _, mb in points),
            "first_half_mb_per_min": growth_first,
            "second_half_mb_per_min": growth_second,
            "levelled": growth_second is not None and growth_second <= LEVEL_MB_PER_MIN,
        }
    judged = [role for role in JUDGED if role in processes]
    if minutes < MIN_VERDICT_MINUTES:
        verdict, levelled = "too short", None
    elif not judged:
        verdict, levelled = "no data", None
    else:
        levelled = all(processes[role]["levelled"] for role in judged)
        verdict = "levelled" if levelled else "growing"
    return {
        "memory": processes,
        "memory_verdict": {
            "verdict": verdict,
            "levelled": levelled,
            "judged": judged,
            "criterion": f"RSS of {' and '.join(JUDGED)} grows at most {LEVEL_MB_PER_MIN:g} MB/min over the second "
            f"half (least-squares slope); runs under {MIN_VERDICT_MINUTES:g} min are too short to judge",
            "behind_at_end_s": behind_s,
            "caveat": (
                f"the stack ran {behind_s:.1f} s behind at the end: its buffers held that backlog, so growth may be "
                "backlog rather than a leak"
                if behind_s is not None and behind_s >= BEHIND_CAVEAT_S
                else None
            ),
        },
    }


def memory_note(report: Mapping[str, Any]) -> str:
    """One line for the plot: the verdict and each judged process's growth over the second half."""
    growth = ", ".join(
        f"{role} {report['memory'][role]['second_half_mb_per_min']:+g} MB/min"
        for role in report["memory_verdict"]["judged"]
        if report["memory"][role]["second_half_mb_per_min"] is not None
    )
    behind = report["memory_verdict"]["behind_at_end_s"]
    return (
        f"memory: {report['memory_verdict']['verdict']}"
        + (f" ({growth} over the second half)" if growth else "")
        + (f"; {behind:.0f} s behind at the end" if report["memory_verdict"]["caveat"] else "")
    )


def _slope_per_min(points: Sequence[tuple[float, float]]) -> float | None:
    """Least-squares slope of MB over time, in MB per minute; ``None`` with fewer than two distinct times."""
    if len({at for at, _ in points}) < 2:
        return None
    mean_t = sum(at for at, _ in points) / len(points)
    mean_mb = sum(mb for _, mb in points) / len(points)
    covariance = sum((at - mean_t) * (mb - mean_mb) for at, mb in points)
    variance = sum((at - mean_t) ** 2 for at, _ in points)
    return round(covariance / variance * 60, 2)


def plot_soak(path: Path, intervals: Sequence[Mapping[str, Any]], *, title: str, verdict_line: str) -> None:
    """Write a PNG of the interval series to ``path`` (parent directories created): throughput in and out, latency
    percentiles, and RSS per process (``verdict_line``: the memory verdict, in its title), in three stacked panels
    over the minutes elapsed."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    minutes = [row["elapsed_s"] / 60 for row in intervals]
    figure = Figure(figsize=(10, 10), layout="constrained")
    FigureCanvasAgg(figure)
    throughput, latency, rss = figure.subplots(3, 1, sharex=True)

    events_in = [row["events_per_s"] for row in intervals]
    pops_out = [row["pops_per_s"] for row in intervals]
    (events_line,) = throughput.plot(minutes, events_in, color="tab:blue", label="events in (left)")
    throughput.set_ylabel("events in per second", color="tab:blue")
    throughput.set_ylim(0, max(events_in, default=1) * 1.2)
    pops = throughput.twinx()
    (pops_line,) = pops.plot(minutes, pops_out, color="tab:orange", label="pop-ups delivered (right)")
    pops.set_ylabel("pop-ups delivered per second", color="tab:orange")
    pops.set_ylim(0, max(pops_out, default=1) * 1.2)
    throughput.legend(handles=[events_line, pops_line], loc="lower left", fontsize="small", ncol=2)
    throughput.set_title("Throughput per interval")
    throughput.grid(alpha=0.3)

    for key, name, color in (
        ("event_to_browser", "event -> browser", "tab:red"),
        ("decision", "decision API", "tab:green"),
    ):
        for percentile, style in (("p50_ms", "--"), ("p99_ms", "-")):
            values = [_or_nan(row[key][percentile]) for row in intervals]
            latency.plot(minutes, values, linestyle=style, color=color, label=f"{name} {percentile[:3]}")
    latency.set_yscale("log")
    latency.yaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    latency.yaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    latency.yaxis.set_minor_formatter(NullFormatter())
    latency.set_ylabel("latency (ms, log scale)")
    latency.set_title("Latency per interval, from each item's due time")
    latency.legend(loc="upper left", fontsize="small", ncol=2)
    latency.grid(alpha=0.3, which="both")

    # The memory-only broker grows with the topics and would flatten everyone else's line: it gets its own axis.
    roles = sorted({role for row in intervals for role in row["rss_mb"]} - {"broker"})
    lines = [
        rss.plot(minutes, [_or_nan(row["rss_mb"].get(role)) for row in intervals], label=f"{role} (left)")[0]
        for role in roles
    ]
    rss.set_ylabel("resident memory (MB)")
    rss.set_ylim(0, max((mb for row in intervals for r, mb in row["rss_mb"].items() if r != "broker"), default=1) * 1.5)
    broker = rss.twinx()
    lines += broker.plot(
        minutes,
        [_or_nan(row["rss_mb"].get("broker")) for row in intervals],
        color="tab:gray",
        linestyle=":",
        label="broker (right; memory-only Tansu keeps every record)",
    )
    broker.set_ylabel("broker resident memory (MB)", color="tab:gray")
    broker.set_ylim(bottom=0)
    rss.set_xlabel("minutes since the start of the soak")
    rss.set_title(f"Resident memory (RSS) per process\n{verdict_line}")
    rss.legend(handles=lines, loc="upper left", fontsize="small", ncol=2)
    rss.grid(alpha=0.3)

    figure.suptitle(title)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)


def _or_nan(value: float | None) -> float:
    """A gap in the line where an interval had nothing to measure."""
    return float("nan") if value is None else value
