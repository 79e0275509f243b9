"""The ``models`` table: partition number -> signed snapshot of that partition's models (:mod:`models.partition`).

The snapshot of partition ``p`` is written to changelog partition ``p``, so whichever worker is assigned ``p``
recovers it with the partition's profiles and insights and continues learning where the last owner stopped.
"""

from __future__ import annotations

from app.codecs import encode_key
from app.main import app, settings
from tables.changelog import changelog_table

model_snapshots, snapshot_writer = changelog_table(
    app,
    "models",
    partitions=settings.partitions,
    value_serializer="raw",
    encode_key=encode_key,
    encode_value=bytes,
    help="Signed snapshots of each partition's learned models.",
)
