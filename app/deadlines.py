"""Per-partition deadlines and the partition clock they are compared with.

A user's :meth:`models.insight.Insight.due_ms` says when the clock alone gives them work (a label expires, a segment
may flip). :class:`Deadlines` keeps, per partition, the earliest such time of each user in a heap; stale heap entries
(the user was rescheduled) are skipped when popped. It lives in memory and is rebuilt from the ``insights`` table
when a worker is assigned the partition, so deadlines survive restarts and rebalances.

:class:`PartitionClocks` is "now" for a partition. ``NUDGE_CLOCK=event`` (the default): the latest event time seen
on the partition, running on with the wall clock until the next event. Live, that is the wall clock (events are
stamped now); during a replay of history it is the replayed time, so labels expire and time windows close on event
time at any replay speed, and a quiet partition's deadlines still come due. ``wall``: the wall clock, always.
"""

from __future__ import annotations

import heapq
import time
from collections.abc import Callable


class Deadlines:
    def __init__(self) -> None:
        self._heaps: dict[int, list[tuple[int, str]]] = {}
        self._due: dict[int, dict[str, int]] = {}

    def schedule(self, partition: int, user_id: str, due_ms: int | None) -> None:
        """Make ``due_ms`` the user's one deadline on ``partition`` (``None`` cancels it)."""
        due = self._due.setdefault(partition, {})
        if due_ms is None:
            due.pop(user_id, None)
            return
        if due.get(user_id) == due_ms:
            return
        due[user_id] = due_ms
        heap = self._heaps.setdefault(partition, [])
        heapq.heappush(heap, (due_ms, user_id))
        if len(heap) > 2 * len(due) + 1024:
            # Every event moves an inactivity deadline: drop the superseded entries before they pile up.
            heap[:] = [(at, user) for user, at in due.items()]
            heapq.heapify(heap)

    def pop_due(self, partition: int, now_ms: int, limit: int = 10_000) -> list[str]:
        """Users on ``partition`` due at or before ``now_ms``, earliest first; their deadline is cleared."""
        heap = self._heaps.get(partition)
        due = self._due.get(partition, {})
        users: list[str] = []
        while heap and heap[0][0] <= now_ms and len(users) < limit:
            at, user_id = heapq.heappop(heap)
            if due.get(user_id) == at:
                del due[user_id]
                users.append(user_id)
        return users

    def drop(self, partition: int) -> None:
        self._heaps.pop(partition, None)
        self._due.pop(partition, None)


class PartitionClocks:
    def __init__(self, mode: str, *, monotonic: Callable[[], float] = time.monotonic) -> None:
        self.mode = mode
        self._monotonic = monotonic
        #: partition -> (latest event time, monotonic seconds when it was seen)
        self._latest: dict[int, tuple[int, float]] = {}

    def observe(self, partition: int, event_ms: int) -> None:
        latest = self._latest.get(partition)
        if latest is None or event_ms > latest[0]:
            self._latest[partition] = (event_ms, self._monotonic())

    def now(self, partition: int) -> int | None:
        """Now on ``partition``; ``None`` on the event clock before any event was seen there."""
        if self.mode == "wall":
            return int(time.time() * 1000)
        latest = self._latest.get(partition)
        if latest is None:
            return None
        event_ms, seen_at = latest
        return event_ms + int((self._monotonic() - seen_at) * 1000)

    def drop(self, partition: int) -> None:
        self._latest.pop(partition, None)
