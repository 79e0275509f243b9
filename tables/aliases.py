"""The ``aliases`` table: anonymous id -> the user id it was merged into (see :mod:`app.identity`).

Keyed, like every table, by the id the events are keyed by, so the partition that receives an anonymous visitor's
later events finds where to forward them.
"""

from __future__ import annotations

from app.codecs import encode_key
from app.main import app, settings
from tables.changelog import changelog_table

aliases, alias_writer = changelog_table(
    app,
    "aliases",
    partitions=settings.partitions,
    value_serializer="utf8",
    encode_key=encode_key,
    encode_value=encode_key,
    help="Anonymous ids merged into a known user: their later events are forwarded to that user.",
)
