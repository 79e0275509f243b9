"""``nudge bench --soak``, run short through the command line: every interval reported, every pop-up delivered once,
the decision reads made, a real PNG written; and out-of-bounds loads refused before anything starts."""

from __future__ import annotations

import re
import struct
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

pytestmark = pytest.mark.integration

PROGRESS_LINE = re.compile(r"^soak: \d+:\d\d in [\d,]+/s, pops [\d.,]+/s \| event->browser p50 .* RSS MB .*worker")


def test_a_short_soak_reports_every_interval_delivers_every_pop_up_once_and_plots_it(tmp_path: Path) -> None:
    plot = tmp_path / "plots" / "soak.png"
    command = ["bench", "--soak", "--minutes", "0.5", "--rate", "100", "--clients", "50", "--json", "--plot", str(plot)]
    result = subprocess.run(
        [sys.executable, "-m", "app.cli", *command], capture_output=True, text=True, timeout=240, cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr[-4000:]
    report = orjson.loads(result.stdout)

    # Every interval reported: six of five seconds, each on stderr and in the series, each carrying load.
    assert report["parameters"]["interval_s"] == 5.0 and report["parameters"]["connected"] == 50
    progress = [line for line in result.stderr.splitlines() if PROGRESS_LINE.match(line)]
    intervals = report["intervals"]
    assert len(progress) == len(intervals) == 6, result.stderr[-4000:]
    assert [row["elapsed_s"] for row in intervals] == sorted(row["elapsed_s"] for row in intervals)
    for row in intervals:
        assert row["events_per_s"] > 50 and row["decision"]["reads"] > 0
        assert {"worker", "gateway", "broker", "clients"} <= row["rss_mb"].keys()

    # Every triggering event made a pop-up, and each reached its browser exactly once.
    totals = report["totals"]
    assert totals["events"] == 3000 and totals["triggers"] > 50
    assert totals["sent"] == totals["triggers"] and totals["undecided"] == 0
    assert totals["delivered"] == totals["sent"] and totals["missing"] == 0 and totals["duplicates"] == 0
    assert sum(row["pops_per_s"] * 5 for row in intervals) == pytest.approx(totals["delivered"], rel=0.25)
    assert 0 < report["event_to_browser"]["p50_ms"] <= report["event_to_browser"]["p99_ms"]

    # The decision reads happened at their rate (at least 20/s for 30 s), all answered.
    assert totals["decision_reads"] == 600 and totals["decision_errors"] == 0
    assert 0 < report["decision"]["p50_ms"] <= report["decision"]["p99_ms"]

    # Half a minute cannot show memory levelling off, and the report says so rather than judging.
    assert report["memory_verdict"]["verdict"] == "too short" and report["memory_verdict"]["levelled"] is None
    for role in ("worker", "gateway", "broker", "clients"):
        figures = report["memory"][role]
        assert 0 < figures["start_mb"] <= figures["max_mb"] and figures["end_mb"] <= figures["max_mb"]

    # A real PNG of the expected size: magic bytes, then the IHDR width and height.
    data = plot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    assert struct.unpack(">II", data[16:24]) == (1000, 1000)
    assert 20_000 < len(data) < 2_000_000


@pytest.mark.parametrize(
    ("arguments", "reason"),
    [
        (["--minutes", "181"], "--minutes must be more than 0 and at most 180"),
        (["--rate", "20001"], "--rate must be more than 0 and at most 20,000 events/s"),
        (["--rate", "2000", "--clients", "10"], "would trip the gateway's rate limit"),
    ],
)
def test_a_soak_out_of_bounds_is_refused_before_anything_starts(arguments: list[str], reason: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "app.cli", "bench", "--soak", *arguments], capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 2 and reason in result.stderr
    assert not result.stdout
