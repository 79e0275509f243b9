"""The ``insights`` table: user id -> :class:`models.insight.Insight`, co-partitioned with ``nudge.events``."""

from __future__ import annotations

from app.codecs import encode_insight, encode_key
from app.main import app, settings
from tables.changelog import changelog_table

insights, insight_writer = changelog_table(
    app,
    "insights",
    partitions=settings.partitions,
    value_serializer="insight",
    encode_key=encode_key,
    encode_value=encode_insight,
    help="Per-user intent score, segments, cluster and pending labels.",
)
