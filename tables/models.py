"""The ``models`` table: partition number -> signed snapshot of that partition's models (:mod:`models.partition`).

The snapshot of partition ``p`` is written to changelog partition ``p``, so whichever worker is assigned ``p``
recovers it with the partition's profiles and insights and continues learning where the last owner stopped.
"""

from __future__ import annotations

from faust.tables.table import Table

from app.codecs import encode_key
from app.main import app, settings
from tables.changelog import BulkTableWriter

changelog = app.topic(
    f"{settings.app_id}-models-changelog",
    partitions=settings.partitions,
    key_serializer="utf8",
    value_serializer="raw",
    compacting=True,
    deleting=False,
    acks=False,
    internal=True,
)
model_snapshots: Table = app.Table(  # type: ignore[assignment]
    "models",
    partitions=settings.partitions,
    changelog_topic=changelog,
    help="Signed snapshots of each partition's learned models.",
)
model_snapshots.key_serializer = "utf8"
model_snapshots.value_serializer = "raw"

snapshot_writer = BulkTableWriter(model_snapshots, encode_key=encode_key, encode_value=bytes)
