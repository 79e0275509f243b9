"""The fault suite: the same deterministic event stream with and without a fault, final states compared.

``nudge faults`` (and ``make faults``) runs every fault in :data:`FAULTS`, prints one line of progress per fault on
stderr and a JSON report on stdout; ``tests/integration/test_faults.py`` runs the same faults at a reduced size in CI.
Each fault is an async function ``(size) -> FaultReport`` in its own module (``app/faults_worker.py`` for worker
crashes and rebalances, ``app/faults_delivery.py`` for Redis, gateways and slow clients) that starts its own stacks.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class FaultReport:
    """What one fault did to the final state, compared with the same stream without the fault."""

    #: Short name, e.g. ``worker-sigkill``.
    fault: str
    #: Events in the deterministic stream.
    events: int
    #: Events (or messages) the fault-free run has and the faulty one lacks.
    lost: int
    #: Events counted twice (profiles, model versions) by the faulty run.
    doubled: int
    #: Pop-ups a client received more than once.
    duplicate_pops: int
    #: Seconds from the fault until the system had caught up again.
    recovery_s: float
    #: What else was compared, and what differed (a reader must be able to tell why ``ok`` is false).
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.lost == 0 and self.doubled == 0 and self.duplicate_pops == 0 and not self.details.get("diff")

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ok": self.ok}


Fault = Callable[[int], Awaitable[FaultReport]]


def registry() -> dict[str, Fault]:
    """Every fault by name, in the order ``nudge faults`` runs them."""
    from app import faults_delivery, faults_worker

    return {**faults_worker.FAULTS, **faults_delivery.FAULTS}


async def run(*, size: int, only: list[str] | None = None) -> dict[str, Any]:
    """Run the named faults (default: all) at ``size`` events each; the JSON report ``nudge faults`` prints."""
    faults = registry()
    unknown = sorted(set(only or []) - set(faults))
    if unknown:
        raise ValueError(f"unknown fault(s) {', '.join(unknown)}; known: {', '.join(faults)}")
    reports = []
    for name, fault in faults.items():
        if only and name not in only:
            continue
        print(f"fault {name}: running ({size} events)", file=sys.stderr, flush=True)
        started = time.monotonic()
        report = await fault(size)
        verdict = "ok" if report.ok else "FAILED"
        print(
            f"fault {name}: {verdict} in {time.monotonic() - started:.0f} s: lost {report.lost}, doubled "
            f"{report.doubled}, duplicate pop-ups {report.duplicate_pops}, recovered in {report.recovery_s:.2f} s",
            file=sys.stderr,
            flush=True,
        )
        reports.append(report.as_dict())
    return {"size": size, "faults": reports, "ok": all(r["ok"] for r in reports)}
