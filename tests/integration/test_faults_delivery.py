"""The delivery faults at a reduced size: Redis restarted, a gateway killed, a client that never reads.

Each runs the same stream with and without its fault on fresh stacks (:mod:`app.faults_delivery`) and must end with
nothing lost, nothing doubled, no pop-up shown twice and a bounded recovery; the report is printed on failure.
"""

from __future__ import annotations

import json

import pytest

from app.faults_delivery import FAULTS

pytestmark = pytest.mark.integration

#: Events per run: 20 users with open tabs, about 200 pop-ups, 8 s of stream.
SIZE = 1_000


@pytest.mark.parametrize("name", sorted(FAULTS))
async def test_a_delivery_fault_loses_nothing_and_shows_no_pop_up_twice(name: str) -> None:
    report = await FAULTS[name](SIZE)
    assert report.ok, json.dumps(report.as_dict(), indent=2, default=str)
    assert report.details["pop_ups"]["faulty"] == report.details["probes"] > 0
