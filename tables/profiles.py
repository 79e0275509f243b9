"""The ``profiles`` table: user id -> :class:`tables.profile.Profile`, co-partitioned with ``nudge.events``."""

from __future__ import annotations

from app.codecs import encode_key, encode_profile
from app.main import app, settings
from tables.changelog import changelog_table

profiles, profile_writer = changelog_table(
    app,
    "profiles",
    partitions=settings.partitions,
    value_serializer="profile",
    encode_key=encode_key,
    encode_value=encode_profile,
    help="Live per-user profiles folded from nudge.events.",
)
