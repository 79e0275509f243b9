"""Latency percentiles for the benchmarks and the fault suite: one definition (nearest rank, no interpolation)."""

from __future__ import annotations

from collections.abc import Sequence


def nearest_rank(ordered: Sequence[float], q: float) -> float:
    """The ``q`` quantile of ``ordered`` (sorted, not empty): the value at rank ``int(q * n)``, the last at most."""
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def percentiles(seconds: Sequence[float], *, digits: int = 2) -> dict[str, float | None]:
    """p50, p99 and max of latencies given in seconds, in milliseconds (``None`` for none)."""
    ordered = sorted(seconds)
    if not ordered:
        return {"p50_ms": None, "p99_ms": None, "max_ms": None}
    return {
        "p50_ms": round(nearest_rank(ordered, 0.50) * 1000, digits),
        "p99_ms": round(nearest_rank(ordered, 0.99) * 1000, digits),
        "max_ms": round(ordered[-1] * 1000, digits),
    }
