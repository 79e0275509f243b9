"""The ``insights`` table: user id -> :class:`models.insight.Insight`, co-partitioned with ``nudge.events``."""

from __future__ import annotations

from faust.tables.table import Table

from app.codecs import encode_insight, encode_key
from app.main import app, settings
from tables.changelog import BulkTableWriter

# Declared like the profiles changelog (see tables/profiles.py for why the serializers are set here).
changelog = app.topic(
    f"{settings.app_id}-insights-changelog",
    partitions=settings.partitions,
    key_serializer="utf8",
    value_serializer="insight",
    compacting=True,
    deleting=False,
    acks=False,
    internal=True,
)
insights: Table = app.Table(  # type: ignore[assignment]
    "insights",
    partitions=settings.partitions,
    changelog_topic=changelog,
    recovery_buffer_size=10_000,
    help="Per-user intent score, segments, cluster and pending labels.",
)
insights.key_serializer = "utf8"
insights.value_serializer = "insight"

insight_writer = BulkTableWriter(insights, encode_key=encode_key, encode_value=encode_insight)
