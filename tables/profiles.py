"""The ``profiles`` table: user id -> :class:`tables.profile.Profile`, co-partitioned with ``nudge.events``."""

from __future__ import annotations

import faust

from app.codecs import encode_key, encode_profile
from app.main import app, settings
from tables.changelog import BulkTableWriter

profiles = app.Table(
    "profiles",
    partitions=settings.partitions,
    schema=faust.Schema(key_serializer="utf8", value_serializer="profile"),
    recovery_buffer_size=10_000,
    help="Live per-user profiles folded from nudge.events.",
)

profile_writer = BulkTableWriter(profiles, encode_key=encode_key, encode_value=encode_profile)
