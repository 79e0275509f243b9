"""The one Faust app. ``nudge worker`` (Procfile: ``worker``) runs it.

Settings are read from the environment here, once; every module below imports ``app`` and ``settings`` from this
module. The imports at the bottom register the topics, tables, agents and web views with the app.
"""

from __future__ import annotations

import os

import faust

from app import codecs
from app.logs import logging_config
from app.metrics import WorkerMetrics
from app.settings import Settings

settings = Settings.from_env(os.environ)
codecs.register()

if settings.embedded_broker and settings.broker_url:
    from app import tansu_compat

    tansu_compat.install(settings.bootstrap_servers)

app = faust.App(
    settings.app_id,
    broker=settings.broker_url,
    store=settings.store,
    datadir=settings.data_dir,
    autodiscover=False,
    topic_partitions=settings.partitions,
    topic_allow_declare=True,
    web_enabled=True,
    web_bind=settings.web_host,
    web_host=settings.web_host,
    web_port=settings.web_port,
    canonical_url=settings.web_url,
    # Faust would serve every table, unauthenticated, at /table/<name>/<key>/, and the cluster's layout at /router/:
    # the API (app/api.py) is the way in. @table_route forwards a request to the owner's canonical_url without them.
    web_tables_enabled=False,
    web_router_enabled=False,
    broker_session_timeout=settings.session_timeout_s,
    broker_heartbeat_interval=1.0,
    broker_commit_interval=1.0,
    producer_linger_ms=settings.producer_linger_ms,
    producer_max_batch_size=512 * 1024,
    producer_max_request_size=4 * 1024 * 1024,
    consumer_max_fetch_size=8 * 1024 * 1024,
    # Records carry batches of events, so few records are buffered; a small buffer made Faust pause a partition
    # under backlog (after a restart) and, now and then, never resume it (measured: one of eight partitions stalled).
    stream_buffer_maxsize=65536,
    # Faust (mode) sets logging up when the worker starts; text keeps its own format.
    logging_config=logging_config(settings.log_level, "json") if settings.log_format == "json" else None,
)
#: This worker's Prometheus metrics, served at ``GET /metrics`` (app/api.py).
metrics = WorkerMetrics()

# acks=False: Nudge commits this topic's offsets itself, with no holes (app/offsets.py, agents/commit.py).
events_topic = app.topic(
    settings.events_topic,
    partitions=settings.partitions,
    key_serializer="raw",
    value_serializer="raw",
    acks=False,
)
dlq_topic = app.topic(
    settings.dlq_topic,
    partitions=settings.partitions,
    key_serializer="raw",
    value_serializer="raw",
)
segments_topic = app.topic(
    settings.segments_topic,
    partitions=settings.partitions,
    key_serializer="raw",
    value_serializer="raw",
)

messages_topic = app.topic(
    settings.messages_topic,
    partitions=settings.partitions,
    key_serializer="raw",
    value_serializer="raw",
)
audit_topic = app.topic(
    settings.audit_topic,
    partitions=settings.partitions,
    key_serializer="raw",
    value_serializer="raw",
)

# Registration: each module declares one thing on ``app``.
from agents import catch_up, clock, commit, gc, ingest, publish, reload, report  # noqa: E402, F401
from app import api, collector  # noqa: E402, F401
from tables import insights, messages, models, profiles  # noqa: E402, F401
