"""Which partition a user lives on.

Every topic that carries user data is keyed by the user id as UTF-8 bytes and partitioned with the Java/aiokafka
default partitioner (murmur2). Faust's table routing hashes the table key the same way (``tables.profiles`` uses
the ``utf8`` key codec), so the worker that owns a user's events also owns the user's profile, and a producer in
any language that keys records by user id lands them on the right partition.
"""

from __future__ import annotations

from functools import lru_cache

from aiokafka.partitioner import murmur2


@lru_cache(maxsize=200_000)
def partition_for(user_id: str, partitions: int) -> int:
    """Return the partition of ``user_id`` among ``partitions`` (cached: murmur2 is pure Python)."""
    return (murmur2(user_id.encode()) & 0x7FFFFFFF) % partitions
