"""The ``messages`` table: user id -> the user's latest decision records (newest last), for ``GET /messages``.

Every record is also produced to ``nudge.messages`` (keyed by user id), the stream delivery reads.
"""

from __future__ import annotations

import orjson

from app.codecs import encode_key
from app.main import app, settings
from tables.changelog import changelog_table

messages, message_writer = changelog_table(
    app,
    "messages",
    partitions=settings.partitions,
    value_serializer="orjson",
    encode_key=encode_key,
    encode_value=orjson.dumps,
    help="Each user's latest trigger decisions: sent, or suppressed with the reason.",
)
