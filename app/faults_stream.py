"""The deterministic stream a delivery fault plays twice (see :mod:`app.faults_delivery`), and its trigger file."""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from typing import Any

from app.events import iso_from_ms
from app.simulate import load_event

PROBE_EVENT = "Fault Probe Requested"
TRIGGER_NAME = "fault_probe"
#: Share of the stream that is probes (each one pop-up).
PROBE_SHARE = 0.2
#: Pop-ups for the client that never reads: enough to pass the gateway's 256 KB send-buffer limit plus the kernel's.
SILENT_USER_PROBES = 600


@dataclass(frozen=True)
class Plan:
    """One fault's deterministic stream and stack shape, the same for the fault-free and the faulty run."""

    fault: str
    users: tuple[str, ...]
    events: tuple[dict[str, Any], ...]
    #: Events per second, and after how many events the fault strikes.
    rate: float
    fault_at: int
    gateways: int = 1
    body_chars: int = 60
    #: The user whose tab never reads in the faulty run (slow-client); it reads without acking in both runs.
    silent_user: str | None = None
    private_redis: bool = False

    @property
    def probes(self) -> int:
        return self.probes_of(None)

    def probes_of(self, user: str | None) -> int:
        """How many probes the stream holds, of ``user`` only unless None: each is one pop-up."""
        return sum(1 for e in self.events if e["event"] == PROBE_EVENT and (user is None or e["userId"] == user))


def plan(
    fault: str,
    size: int,
    *,
    gateways: int = 1,
    silent_user: bool = False,
    private_redis: bool = False,
    body_chars: int = 60,
    fault_share: float = 0.3,
) -> Plan:
    """The stream for ``size`` events: 10 to 100 users, at least 8 s at 100 to 250 events/s, seeded by the fault."""
    picker = random.Random(fault)
    users = tuple(f"fault-user-{n:03d}" for n in range(max(10, min(100, size // 50))))
    silent = "fault-silent-user" if silent_user else None
    rate = max(100.0, min(250.0, size / 8))
    base_ms = int(time.time() * 1000) - 60_000 - size  # one event a millisecond, all in the past
    silent_share = min(0.5, SILENT_USER_PROBES / size) if silent else 0.0
    events = []
    for index in range(size):
        if silent is not None and picker.random() < silent_share:
            user, probe = silent, True
        else:
            user, probe = picker.choice(users), picker.random() < PROBE_SHARE
        signal = (PROBE_EVENT, {"source": "faults"}) if probe else None
        events.append(load_event(user, f"{fault}-{index}", iso_from_ms(base_ms + index), picker=picker, signal=signal))
    all_users = (*users, silent) if silent is not None else users
    return Plan(
        fault,
        all_users,
        tuple(events),
        rate,
        int(size * fault_share),
        gateways,
        body_chars,
        silent,
        private_redis,
    )


def triggers_yaml(body_chars: int) -> str:
    body = ("Every pop-up of the fault suite reads like this one. " * (body_chars // 50 + 1))[:body_chars]
    return f"""\
# Written by `nudge faults`: one trigger on an event, no cooldown, so every probe is exactly one pop-up.
cap_per_user_per_day: 1000
triggers:
  {TRIGGER_NAME}:
    when: {{event: {PROBE_EVENT}}}
    message: {{title: "Fault probe", body: "{body}"}}
    consent: marketing
"""
