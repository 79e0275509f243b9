"""Which partitions' models this worker holds, and how they move between workers.

A worker learns only for the partitions it is assigned. When it is first given a partition (start, rebalance,
takeover after a crash) it loads the partition's snapshot from the ``models`` table, or starts fresh when there is
none; snapshots are written at every offset commit (``agents/commit.py``), before the producer flush, so a successor
continues with everything learned up to the last commit (a crash loses at most the learning of one commit interval;
the events are not lost, and they are not learned twice).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping

from models.intent import Kind
from models.partition import PartitionModels, decode_snapshot, encode_snapshot

log = logging.getLogger(__name__)


class Learning:
    def __init__(self, *, kind: Kind, secret: bytes) -> None:
        self._kind = kind
        self._secret = secret
        self.models: dict[int, PartitionModels] = {}
        #: Per partition, how much its models had learned when their latest snapshot was delivered.
        self.snapshotted: dict[int, int] = {}

    def take(self, partition: int, snapshot: bytes | None) -> PartitionModels:
        """The models of a partition this worker was just assigned: the snapshot, unless ours are further along."""
        loaded = None
        if snapshot is not None:
            try:
                loaded = decode_snapshot(snapshot, self._secret)
            except Exception as error:  # a forged snapshot (SnapshotError), or one from another version of the code
                log.error("partition %d: model snapshot refused, starting fresh: %s", partition, error)
        held = self.models.get(partition)
        chosen = max((m for m in (held, loaded) if m is not None), key=lambda m: m.learned, default=None)
        if chosen is None:
            chosen = PartitionModels(partition, self._kind)
            log.info("partition %d: no model snapshot, starting a fresh %s intent model", partition, self._kind)
        elif chosen is loaded:
            log.info("partition %d: continuing from model snapshot %s", partition, chosen.version)
        self.models[partition] = chosen
        self.snapshotted[partition] = chosen.learned
        return chosen

    def release(self, partitions: Iterable[int]) -> None:
        """Forget partitions another worker now owns (their snapshot is in the table)."""
        for partition in partitions:
            self.models.pop(partition, None)
            self.snapshotted.pop(partition, None)

    def snapshots(self) -> dict[int, tuple[int, bytes]]:
        """``partition -> (learned, signed snapshot)`` of the models that learned since their last snapshot.

        Call :meth:`delivered` with the ``learned`` counts once the snapshots are safely in the changelog.
        """
        return {
            p: (m.learned, encode_snapshot(m, self._secret))
            for p, m in self.models.items()
            if m.learned != self.snapshotted.get(p)
        }

    def delivered(self, learned: Mapping[int, int]) -> None:
        for partition, count in learned.items():
            if partition in self.models:
                self.snapshotted[partition] = count
