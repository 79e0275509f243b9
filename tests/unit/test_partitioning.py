"""partition_for must put a user where every Kafka producer keyed by the user id puts them."""

from __future__ import annotations

import pytest
from aiokafka.partitioner import DefaultPartitioner

from app.partitioning import partition_for

PARTITION_COUNTS = [1, 2, 3, 7, 8, 12, 16, 31, 64, 100, 1024]
USER_IDS = [
    *(f"user-{i}" for i in range(500)),
    *(f"r{541312140 + i * 7919}" for i in range(200)),
    *(f"anon-{i:032x}" for i in range(0, 10**30, 10**28)),
    "",
    "a",
    "ü",
    "ユーザー",
    "émile@example.com",
    "🙂" * 10,
    "x" * 256,
]


@pytest.mark.parametrize("partitions", PARTITION_COUNTS)
def test_agrees_with_aiokafka_default_partitioner_on_the_utf8_key(partitions: int) -> None:
    partitioner = DefaultPartitioner()
    all_partitions = list(range(partitions))
    for user_id in USER_IDS:
        expected = partitioner(user_id.encode("utf-8"), all_partitions, all_partitions)
        assert partition_for(user_id, partitions) == expected, user_id


@pytest.mark.parametrize("partitions", PARTITION_COUNTS)
def test_partition_is_in_range(partitions: int) -> None:
    assert all(0 <= partition_for(user_id, partitions) < partitions for user_id in USER_IDS)


@pytest.mark.parametrize(
    ("key", "java_murmur2"),
    [
        ("21", -973932308),
        ("foobar", -790332482),
        ("a-little-bit-long-string", -985981536),
        ("a-little-bit-longer-string", -1486304829),
        ("lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8", -58897971),
        ("abc", 479470107),
    ],
)
def test_agrees_with_the_java_client(key: str, java_murmur2: int) -> None:
    """Kafka's own murmur2 test vectors (UtilsTest), partitioned as Utils.toPositive(hash) % partitions."""
    for partitions in PARTITION_COUNTS:
        assert partition_for(key, partitions) == (java_murmur2 & 0x7FFFFFFF) % partitions


def test_users_spread_over_every_partition() -> None:
    assert {partition_for(f"user-{i}", 8) for i in range(1000)} == set(range(8))
