"""The read API: profiles, worker stats and health.

``GET /v1/users/{id}/profile`` is answered by whichever worker owns the user's partition: Faust's table routing
forwards the request there. Every route but ``/health`` needs ``Authorization: Bearer <api key>``.
"""

from __future__ import annotations

import hmac
import time
from collections.abc import Awaitable, Callable
from functools import wraps
from typing import Any, cast

from faust.tables.manager import TableManager
from faust.web import Request, Response, View

from app.main import app, settings
from app.stats import ingest_stats
from tables.profile_view import profile_view
from tables.profiles import profiles

Handler = Callable[..., Awaitable[Response]]


def requires_api_key(handler: Handler) -> Handler:
    """Answer 401 unless the request carries a known API key; check before routing to another worker."""

    @wraps(handler)
    async def checked(view: View, request: Request, *args: Any, **kwargs: Any) -> Response:
        scheme, _, key = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not any(
            hmac.compare_digest(key.encode(), known.encode()) for known in settings.api_keys
        ):
            return view.json({"error": "missing or unknown API key (Authorization: Bearer <key>)"}, status=401)
        return await handler(view, request, *args, **kwargs)

    return checked


@app.page("/v1/users/{user_id}/profile")
@requires_api_key
@app.table_route(table=profiles, match_info="user_id")
async def get_profile(view: View, request: Request, user_id: str) -> Response:
    profile = profiles.data.get(user_id)
    if profile is None:
        return view.json({"error": f"no profile for user {user_id!r}"}, status=404)
    return view.json(profile_view(profile, now_ms=int(time.time() * 1000)))


@app.page("/v1/stats")
@requires_api_key
async def get_stats(view: View, request: Request) -> Response:
    return view.json({**ingest_stats.as_dict(), "profiles": len(profiles.data)})


@app.page("/health")
async def get_health(view: View, request: Request) -> Response:
    ready = cast(TableManager, app.tables).recovery.completed.is_set() and not app.rebalancing
    return view.json({"ready": ready}, status=200 if ready else 503)
