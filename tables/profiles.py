"""The ``profiles`` table: user id -> :class:`tables.profile.Profile`, co-partitioned with ``nudge.events``."""

from __future__ import annotations

from faust.tables.table import Table

from app.codecs import encode_key, encode_profile
from app.main import app, settings
from tables.changelog import BulkTableWriter

# Faust derives a table's serializers from key_type/value_type only ("json" unless a faust.Record), so it would route
# and recover by JSON-encoded keys. Keys here are the user id as UTF-8 (the bytes every producer keys by, see
# app.partitioning) and values orjson-encoded profiles (app.codecs): declare the changelog topic with them.
changelog = app.topic(
    f"{settings.app_id}-profiles-changelog",
    partitions=settings.partitions,
    key_serializer="utf8",
    value_serializer="profile",
    compacting=True,
    deleting=False,
    acks=False,
    internal=True,
)
profiles: Table = app.Table(  # type: ignore[assignment]
    "profiles",
    partitions=settings.partitions,
    changelog_topic=changelog,
    recovery_buffer_size=10_000,
    help="Live per-user profiles folded from nudge.events.",
)
# The store is created lazily, on first use, with the table's serializers (RocksDB encodes with them).
profiles.key_serializer = "utf8"
profiles.value_serializer = "profile"

profile_writer = BulkTableWriter(profiles, encode_key=encode_key, encode_value=encode_profile)
