"""The ``erasures`` table: keyed hash of an erased user's id -> the erasure time (ms).

Holds no personal data (see :func:`app.audit.subject`); the ingest path drops the user's events stamped at or before
that time, so re-reading the log, or a late retry, does not bring the person back.
"""

from __future__ import annotations

import orjson

from app.codecs import encode_key
from app.main import app, settings
from tables.changelog import changelog_table

erasures, erasure_writer = changelog_table(
    app,
    "erasures",
    partitions=settings.partitions,
    value_serializer="orjson",
    encode_key=encode_key,
    encode_value=orjson.dumps,
    help="Erased users (keyed hash of the id) and when: their earlier events stay dropped.",
)
