"""What each process of a bench run uses, by role: CPU seconds and resident memory.

The benches start the stack (broker, worker, gateway) and the websocket clients as children of their own process;
these functions find them in ``/proc`` and name each by its role (``worker``, ``gateway``, ``clients``, ``bench``
for the caller itself, otherwise the executable's name, e.g. the Tansu broker's). Linux only: elsewhere they return
empty dicts.
"""

from __future__ import annotations

import os
from pathlib import Path

_TICK = os.sysconf("SC_CLK_TCK")
_PAGE = os.sysconf("SC_PAGE_SIZE")


def cpu_seconds() -> dict[str, float]:
    """CPU seconds used so far by this process and its children (the stack and the clients), by role."""
    used: dict[str, float] = {}
    for role, stat_fields, _ in _processes():
        used[role] = used.get(role, 0.0) + _cpu_s(stat_fields)
    return used


def cpu_seconds_of(pid: int) -> float:
    """CPU seconds used so far by process ``pid`` (user + system)."""
    return _cpu_s(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split())


def _cpu_s(stat_fields: list[str]) -> float:
    """utime + stime, in seconds, from the fields of ``/proc/<pid>/stat`` after the command name."""
    return (int(stat_fields[11]) + int(stat_fields[12])) / _TICK


def cpu_percent(before: dict[str, float], after: dict[str, float], wall_s: float) -> dict[str, float]:
    """Percent of one core each role used between two :func:`cpu_seconds` readings ``wall_s`` apart."""
    return {role: round((after[role] - before.get(role, 0.0)) / wall_s * 100, 1) for role in sorted(after)}


def resident_mb() -> dict[str, float]:
    """Resident memory (RSS, MB) of this process's children, by role: the stack's processes and the clients."""
    resident: dict[str, float] = {}
    for role, _, statm in _processes(children_only=True):
        resident[role] = round(resident.get(role, 0.0) + int(statm.split()[1]) * _PAGE / 1e6, 1)
    return resident


def _processes(*, children_only: bool = False) -> list[tuple[str, list[str], str]]:
    """(role, fields of ``/proc/<pid>/stat`` after the command name, ``/proc/<pid>/statm``) of each process."""
    own = os.getpid()
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            pid, parent = int(stat.parent.name), int(fields[1])
            if parent != own and (pid != own or children_only):
                continue
            role = "bench" if pid == own else _role((stat.parent / "cmdline").read_bytes())
            statm = (stat.parent / "statm").read_text()
        except (OSError, IndexError, ValueError):
            continue  # gone meanwhile
        found.append((role, fields, statm))
    return found


def _role(cmdline: bytes) -> str:
    words = cmdline.split(b"\0")
    if b"app.bench_clients" in words:
        return "clients"
    if b"app.cli" in words:
        return next((w.decode() for w in words if w in (b"worker", b"gateway")), "nudge")
    return Path(words[0].decode(errors="replace")).name or "other"
