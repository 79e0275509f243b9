"""Integration tier: a real Tansu broker, real Redis and real worker processes, started per test by DevStack.

Every test gets its own broker (it starts in about 0.1 s), so topics never leak between tests.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from typing import Any

import pytest

from app.devstack import DevStack
from app.events import to_event

# The helpers live in the app (the fault suite uses them too); tests import them from here, as before.
from app.stack_client import (  # noqa: F401
    end_offsets,
    fetch_profiles,
    get_json,
    produce_batched,
    read_topic,
    stable,
    stats,
    wait_for,
)
from tables.profile import Profile, fold

pytestmark = pytest.mark.integration

FAR_FUTURE_MS = 4_102_444_800_000  # 2100-01-01: "now" for the oracle, so nothing is rejected as future


@pytest.fixture
async def stack(tmp_path: Any) -> AsyncIterator[DevStack]:
    # keep_files: worker and broker logs stay in tmp_path (pytest keeps the last three runs), to read after a failure.
    async with DevStack(workers=1, root=tmp_path / "stack", keep_files=True) as running:
        yield running


def expected_profiles(events: Iterable[dict[str, Any]]) -> dict[str, Profile]:
    """The oracle: the pure fold applied to the events in order, once each, with no broker in between."""
    profiles: dict[str, Profile] = {}
    for raw in events:
        event = to_event(raw, now_ms=FAR_FUTURE_MS)
        current = profiles.get(event.user_id) or Profile(user_id=event.user_id)
        profiles[event.user_id] = fold(current, event)
    return profiles
