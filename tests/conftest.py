"""Shared by every tier: the Hypothesis profile of the fuzz tests, and the count of fuzz cases they ran.

The profile keeps no example database and puts Hypothesis' caches in the temp dir (no ``.hypothesis/`` in the
tree), has no deadline (a shared CI machine is slow now and then, and a slow example is not a failure), and sets
``max_examples`` to ``NUDGE_FUZZ_EXAMPLES`` (default 150, sized to keep the fuzz suite near a minute here); each fuzz
test runs a stated multiple of it (the HTTP one sends 2x: 300 requests). Scale it up for a long run:
``NUDGE_FUZZ_EXAMPLES=1500 .venv/bin/pytest tests -k fuzz``.

Each fuzz test takes the session-scoped ``fuzz_cases`` counter and adds one per case it runs, under its area
(``events``, ``ws``, ``rules``, ``collector``...); the terminal summary prints the totals in one line.
"""

from __future__ import annotations

import os
import tempfile
from collections import Counter
from pathlib import Path

import pytest
from _pytest.terminal import TerminalReporter
from hypothesis import settings
from hypothesis.configuration import set_hypothesis_home_dir

FUZZ_EXAMPLES = int(os.environ.get("NUDGE_FUZZ_EXAMPLES", "150"))

# Hypothesis also caches Unicode tables and source constants on disk, in ./.hypothesis unless told otherwise.
set_hypothesis_home_dir(Path(tempfile.gettempdir()) / "nudge-hypothesis")

settings.register_profile("nudge-fuzz", database=None, deadline=None, max_examples=FUZZ_EXAMPLES)
settings.load_profile("nudge-fuzz")

_CASES = pytest.StashKey[Counter[str]]()


@pytest.fixture(scope="session")
def fuzz_cases(pytestconfig: pytest.Config) -> Counter[str]:
    """Add one per fuzz case run, under the area fuzzed: ``fuzz_cases["events"] += 1``."""
    return pytestconfig.stash.setdefault(_CASES, Counter())


def pytest_terminal_summary(terminalreporter: TerminalReporter, config: pytest.Config) -> None:
    cases = config.stash.get(_CASES, None)
    if not cases:
        return
    areas = ", ".join(f"{area} {count}" for area, count in sorted(cases.items()))
    terminalreporter.write_line(f"fuzz: {sum(cases.values())} cases ({areas})")
