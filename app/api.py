"""The read API: profiles, decisions, messages, models, websocket tokens, worker stats and health.

``GET /v1/users/{id}/profile`` and ``GET /v1/users/{id}/decision`` are answered by whichever worker owns the user's
partition: Faust's table routing forwards the request there. ``GET /v1/models`` describes the models of the
partitions this worker holds. ``GET /metrics`` serves :mod:`app.metrics`. Every route but ``/health`` needs
``Authorization: Bearer <api key>``. A route that needs Redis (the per-user keys of personal fields) answers 503 with
the reason and ``Retry-After`` while it is unavailable; the others are unaffected.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from functools import wraps
from typing import Any, cast
from urllib.parse import quote

import orjson
from faust.exceptions import ConsumerNotStarted
from faust.tables.manager import TableManager
from faust.types import TP
from faust.web import Request, Response, View
from redis.exceptions import RedisError

from agents.ingest import offsets, pipeline, read_model, rules
from app.audit import audit_record, subject
from app.auth import has_api_key
from app.collector import REDIS_RETRY_AFTER_S, key_store, produce, produce_record
from app.events import iso_from_ms, normalise
from app.identity import Erase, erase_record
from app.main import app, audit_topic, events_topic, metrics, settings
from app.metrics import CONTENT_TYPE, WorkerReading, consumer_lag
from app.partitioning import partition_for
from app.pii import Unreadable, decrypt_fields, is_token
from app.stats import ingest_stats
from models.consent import consent_event, parse_preferences
from models.insight import Insight
from models.partition import summarize
from tables.aliases import aliases
from tables.insights import insights
from tables.messages import messages
from tables.profile_view import profile_view
from tables.profiles import profiles
from ws.tokens import DEFAULT_TTL_S, TokenError, issue_token

Handler = Callable[..., Awaitable[Response]]


def requires_api_key(handler: Handler) -> Handler:
    """Answer 401 unless the request carries a known API key; check before routing to another worker."""

    @wraps(handler)
    async def checked(view: View, request: Request, *args: Any, **kwargs: Any) -> Response:
        if not has_api_key(request.headers.get("Authorization", ""), settings.api_keys):
            return view.json({"error": "missing or unknown API key (Authorization: Bearer <key>)"}, status=401)
        return await handler(view, request, *args, **kwargs)

    return checked


def needs_redis(handler: Handler) -> Handler:
    """Answer 503 with the reason and ``Retry-After`` when Redis fails the handler: the request can be retried as is
    once it is back, unlike the 500 an unexpected error gets."""

    @wraps(handler)
    async def guarded(view: View, request: Request, *args: Any, **kwargs: Any) -> Response:
        try:
            return await handler(view, request, *args, **kwargs)
        except RedisError:
            headers = {"Retry-After": str(REDIS_RETRY_AFTER_S)}
            message = "personal fields cannot be read or written now: the key store (Redis) is unavailable; retry later"
            return view.json({"error": message}, status=503, headers=headers)

    return guarded


@app.page("/v1/users/{user_id}/profile")
@requires_api_key
@app.table_route(table=profiles, match_info="user_id")
async def get_profile(view: View, request: Request, user_id: str) -> Response:
    """The user's live profile; for an anonymous id merged into a user, a redirect to that user's profile."""
    profile = profiles.data.get(user_id)
    canonical = aliases.data.get(user_id)
    if profile is None and canonical is not None:
        location = f"/v1/users/{quote(canonical, safe='')}/profile"
        return view.json({"user_id": canonical, "alias": user_id}, status=307, headers={"Location": location})
    if profile is None:
        return view.json({"error": f"no profile for user {user_id!r}"}, status=404)
    return view.json(profile_view(profile, now_ms=int(time.time() * 1000)))


@app.page("/v1/users/{user_id}/decision")
@requires_api_key
@app.table_route(table=insights, match_info="user_id")
async def get_decision(view: View, request: Request, user_id: str) -> Response:
    """What this user should see now: segments, cluster, intent score and the content blocks of their segments."""
    return view.json(decision(user_id, insights.data.get(user_id)))


def decision(user_id: str, insight: Insight | None) -> dict[str, Any]:
    segments = insight.segments if insight else ()
    cluster = None
    if insight is not None and insight.cluster is not None:
        models = pipeline.learning.models.get(partition_for(user_id, settings.partitions))
        described = models.clusters.describe() if models else []
        summary = next((c["summary"] for c in described if c["cluster"] == insight.cluster), None)
        cluster = {"id": insight.cluster, "summary": summary}
    intent = None
    if insight is not None and insight.intent is not None:
        intent = {"score": round(insight.intent, 4), "model": insight.model_version, "as_of_ms": insight.as_of_ms}
    return {
        "user_id": user_id,
        "known": insight is not None,
        "segments": list(segments),
        "cluster": cluster,
        "intent": intent,
        "content": rules.content.current.blocks_for(segments),
        "versions": {"segments": rules.segments.current.version, "content": rules.content.current.version},
    }


@app.page("/v1/users/{user_id}/messages")
@requires_api_key
@app.table_route(table=messages, match_info="user_id")
async def get_messages(view: View, request: Request, user_id: str) -> Response:
    """The user's latest trigger decisions, newest first: sent, or suppressed with the reason and what was read."""
    return view.json({"user_id": user_id, "messages": list(reversed(messages.data.get(user_id, [])))})


MAX_TOKEN_TTL_S = 3600


@app.page("/v1/ws-token")
class WebsocketToken(View):
    """``POST {"userId": ..., "ttl_s"?: 1..3600}``: a short-lived token the browser presents to the gateway.

    For the shop's backend, which knows who is logged in (API key required); see :mod:`ws.tokens`.
    """

    @requires_api_key
    async def post(self, request: Request) -> Response:
        try:
            body = orjson.loads(await request.read())
        except orjson.JSONDecodeError:
            return self.json({"error": "the body is not JSON"}, status=400)
        if not isinstance(body, dict) or not isinstance(body.get("userId"), str):
            return self.json({"error": 'expected {"userId": "...", "ttl_s": seconds}'}, status=400)
        ttl = body.get("ttl_s", DEFAULT_TTL_S)
        if not isinstance(ttl, int) or isinstance(ttl, bool) or not 1 <= ttl <= MAX_TOKEN_TTL_S:
            return self.json({"error": f"ttl_s must be a whole number of seconds, 1..{MAX_TOKEN_TTL_S}"}, status=400)
        expires_at = int(time.time()) + ttl
        try:
            token = issue_token(settings.secret.encode(), body["userId"], expires_at=expires_at)
        except TokenError as error:
            return self.json({"error": f"userId refused: {error.reason}"}, status=400)
        return self.json({"token": token, "user_id": body["userId"], "expires_at": expires_at})


@app.page("/v1/users/{user_id}/consent")
class Consent(View):
    """``PUT {"categoryPreferences": {"marketing": false, ...}}``: record a user's consent choice.

    The choice becomes a ``Consent Updated`` event on ``nudge.events`` (so a replay reproduces it) and applies from
    that event on. Answers 202 once the broker has it; 400 with the reason for an unknown purpose or a wrong type;
    503 while Redis is unavailable if ``NUDGE_PERSONAL_FIELDS`` makes a field of that event personal.
    """

    @requires_api_key
    @needs_redis
    async def put(self, request: Request, user_id: str) -> Response:
        try:
            body = orjson.loads(await request.read())
        except orjson.JSONDecodeError:
            return self.json({"error": "the body is not JSON"}, status=400)
        if not isinstance(body, dict) or set(body) != {"categoryPreferences"}:
            return self.json({"error": 'expected {"categoryPreferences": {"<purpose>": true|false}}'}, status=400)
        now_ms = int(time.time() * 1000)
        try:
            preferences = parse_preferences(body["categoryPreferences"])
            event = consent_event(user_id, preferences, timestamp=iso_from_ms(now_ms), source="api")
            normalised = normalise(event, now_ms=now_ms)
        except ValueError as error:
            return self.json({"error": str(error)}, status=400)
        await produce([normalised])
        await _audit("consent", request, user_id, now_ms, categoryPreferences=preferences)
        return self.json(
            {"user_id": user_id, "categoryPreferences": preferences, "messageId": normalised["messageId"]}, status=202
        )


@app.page("/v1/users/{user_id}")
class Erasure(View):
    """``DELETE``: erase the user everywhere Nudge keeps state (GDPR Art. 17). Answers 202 once the request is in the
    user's event stream; the worker then removes profile, insight, labels, timers, decision records, aliases and
    Redis keys, and writes a receipt (without the user id) to ``nudge.audit``."""

    @requires_api_key
    async def delete(self, request: Request, user_id: str) -> Response:
        now_ms = int(time.time() * 1000)
        record = erase_record(Erase(user_id, now_ms), settings.secret.encode())
        await produce_record(user_id, record)
        await _audit("erasure_requested", request, user_id, now_ms)
        marker = subject(settings.secret.encode(), user_id)
        return self.json({"subject": marker, "requested_at": iso_from_ms(now_ms)}, status=202)


@app.page("/v1/users/{user_id}/export")
@requires_api_key
@app.table_route(table=profiles, match_info="user_id")
@needs_redis
async def get_export(view: View, request: Request, user_id: str) -> Response:
    """Everything Nudge holds about the user (GDPR Art. 15/20), as one JSON document; the request is audited.

    Decrypting personal traits needs the user's key from Redis: without it, 503 (:func:`needs_redis`)."""
    now_ms = int(time.time() * 1000)
    profile, insight = profiles.data.get(user_id), insights.data.get(user_id)
    if profile is None and insight is None:
        return view.json({"error": f"nothing held about user {user_id!r}"}, status=404)
    shown = profile_view(profile, now_ms=now_ms) if profile is not None else None
    if shown is not None and any(is_token(v) for v in shown["traits"].values()):
        key = (await key_store.keys_for([user_id], create=False))[user_id]
        try:
            shown["traits"] = decrypt_fields({"traits": shown["traits"]}, key, user_id, _trait_paths(shown))["traits"]
        except Unreadable as error:
            shown["traits"] = {"error": f"personal fields unreadable: {error}"}
    document = {
        "user_id": user_id,
        "exported_at": iso_from_ms(now_ms),
        "profile": shown,
        "merged_anonymous_ids": list(profile.aliases) if profile is not None else [],
        "insight": decision(user_id, insight) if insight is not None else None,
        "pending_labelled_moments": len(insight.pending) if insight is not None else 0,
        "messages": list(messages.data.get(user_id, [])),
    }
    await _audit("export", request, user_id, now_ms)
    return view.json(document)


def _trait_paths(shown: dict[str, Any]) -> list[str]:
    """Every trait holding a token: whichever fields were personal when it was written."""
    return [f"traits.{name}" for name, value in shown["traits"].items() if is_token(value)]


async def _audit(action: str, request: Request, user_id: str, now_ms: int, **details: Any) -> None:
    _, _, key = request.headers.get("Authorization", "").partition(" ")
    record = audit_record(
        action, secret=settings.secret.encode(), user_id=user_id, api_key=key, at=iso_from_ms(now_ms), **details
    )
    await audit_topic.send(key=subject(settings.secret.encode(), user_id).encode(), value=record)


@app.page("/v1/models")
@requires_api_key
async def get_models(view: View, request: Request) -> Response:
    """The models of the partitions this worker holds, with progressive metrics against the has-cart baseline."""
    held = pipeline.learning.models
    pooled = summarize(row for models in held.values() for row in models.progress.resolved)
    return view.json(
        {
            "worker": settings.web_url,
            "intent_model": settings.intent_model,
            "label_horizon_s": settings.label_horizon_s,
            "clock": settings.clock,
            "baseline": "has a cart changed in the current session",
            "pooled": pooled,
            "partitions": {
                str(p): {**models.describe(), "snapshot_learned": pipeline.learning.snapshotted.get(p)}
                for p, models in sorted(held.items())
            },
            "segments": {
                **rules.segments.status(),
                "segments": {s.name: s.description for s in rules.segments.current.segments},
                "changes_emitted": pipeline.segment_changes,
            },
            "content": rules.content.status(),
            "triggers": {**rules.triggers.status(), "decisions": pipeline.decisions},
            "read_model": {"written": read_model.written},
        }
    )


@app.page("/v1/stats")
@requires_api_key
async def get_stats(view: View, request: Request) -> Response:
    anonymous = pipeline.anonymous_counts
    return view.json({**ingest_stats.as_dict(), "profiles": len(profiles.data), "anonymous_events": anonymous})


@app.page("/metrics")
@requires_api_key
async def get_metrics(view: View, request: Request) -> Response:
    """This worker's metrics in the Prometheus text format (see :mod:`app.metrics`)."""
    return view.bytes(metrics.exposition(), headers={"Content-Type": CONTENT_TYPE})


def _metrics_reading() -> WorkerReading:
    """This worker's plain counters and its consumer lag, read when ``/metrics`` is scraped."""
    highwaters = _held_highwaters()
    positions = {p: offsets.expected.get(p, offsets.committed.get(p)) for p in highwaters}
    return WorkerReading(
        records=ingest_stats.records,
        folded=ingest_stats.folded,
        duplicates=ingest_stats.duplicates,
        forwarded=ingest_stats.forwarded,
        segment_changes=pipeline.segment_changes,
        read_model_writes=read_model.written,
        profiles=len(profiles.data),
        partitions_held=len(highwaters),
        lag=consumer_lag(highwaters, positions),
    )


def _held_highwaters() -> dict[int, int | None]:
    """The ``nudge.events`` partitions this worker holds, with the high watermark its consumer last fetched."""
    topic = events_topic.get_topic_name()
    try:
        held = [tp for tp in cast(set[TP], app.consumer.assignment()) if tp.topic == topic]
        return {tp.partition: app.consumer.highwater(tp) for tp in held}
    except ConsumerNotStarted:  # scraped while the worker starts
        return {}


metrics.read_at_scrape(_metrics_reading)


@app.page("/health")
async def get_health(view: View, request: Request) -> Response:
    ready = cast(TableManager, app.tables).recovery.completed.is_set() and not app.rebalancing
    return view.json({"ready": ready}, status=200 if ready else 503)
