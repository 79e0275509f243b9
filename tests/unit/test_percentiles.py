"""The one percentile definition every bench and the fault suite report with: nearest rank, in milliseconds."""

from __future__ import annotations

import random

from app.percentiles import nearest_rank, percentiles


def test_percentiles_are_nearest_ranks_of_the_sorted_latencies_in_milliseconds() -> None:
    seconds = [i / 1000 for i in range(1, 101)]  # 1 ms .. 100 ms
    random.Random(3).shuffle(seconds)
    assert percentiles(seconds) == {"p50_ms": 51.0, "p99_ms": 100.0, "max_ms": 100.0}
    assert percentiles([0.0123456], digits=3) == {"p50_ms": 12.346, "p99_ms": 12.346, "max_ms": 12.346}
    assert percentiles([]) == {"p50_ms": None, "p99_ms": None, "max_ms": None}
    assert nearest_rank([1.0, 2.0, 3.0, 4.0], 0.5) == 3.0 and nearest_rank([1.0, 2.0], 1.0) == 2.0
