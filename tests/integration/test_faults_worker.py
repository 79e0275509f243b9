"""The worker faults of the fault suite at a reduced size: a SIGKILL mid-batch and a SIGTERM during a rebalance end
with the same profiles, decisions and models as the same stream undisturbed (see app/faults_worker.py)."""

from __future__ import annotations

import json

import pytest

from app.faults_worker import FAULTS

pytestmark = pytest.mark.integration

#: Events per run: enough for every partition to be busy when the fault strikes, small enough for CI.
SIZE = 3_000
#: From the fault until the group has settled and processes the stream live again.
MAX_RECOVERY_S = 60.0


@pytest.mark.parametrize("name", sorted(FAULTS))
async def test_a_worker_fault_loses_nothing_and_counts_nothing_twice(name: str) -> None:
    report = await FAULTS[name](SIZE)
    shown = json.dumps(report.as_dict(), indent=2)
    assert report.ok, shown
    assert report.events == SIZE
    assert report.details["profiles"]["equal"] == report.details["users"], shown
    assert report.details["decisions"]["records"] > 0, shown  # the rules did decide: there was something to lose
    assert 0 < report.recovery_s < MAX_RECOVERY_S, shown
