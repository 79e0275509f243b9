"""Consent per purpose: the purposes Nudge knows, how a stated choice is read, and the event that records one.

A user's consent is stated in events (Segment's convention, ``context.consent.categoryPreferences``), so it travels
with the event stream and a replay reproduces it. ``PUT /v1/users/{id}/consent`` and the browser SDK produce a
:func:`consent_event`. Where each purpose is enforced:

- ``analytics``: without it an event is not folded into the profile, only counted per event name
  (:func:`tables.profile.record_steps`);
- ``personalization``: without it there is no score, no cluster and no segment (:func:`models.insight.on_event`);
- ``marketing``: without it a trigger that needs it is suppressed with reason ``consent`` (:mod:`models.triggers`).

A purpose a user never stated takes the deployment's default (``NUDGE_DEFAULT_CONSENT``; empty: opt-in).
"""

from __future__ import annotations

import hashlib
from typing import Any, Final

#: The purposes a user can grant or refuse. Add one here (and enforce it where it applies) to extend the list.
PURPOSES: Final = ("analytics", "personalization", "marketing")
CONSENT_EVENT: Final = "Consent Updated"


def parse_preferences(value: object, *, where: str = "categoryPreferences") -> dict[str, bool]:
    """Read ``{"<purpose>": true | false, ...}``; raise :class:`ValueError` naming what is wrong with it."""
    if not isinstance(value, dict):
        raise ValueError(f"{where} must be an object of purpose: true/false")
    preferences: dict[str, bool] = {}
    for purpose, granted in value.items():
        if purpose not in PURPOSES:
            raise ValueError(f"{where}: unknown purpose {str(purpose)[:40]!r}: expected {', '.join(PURPOSES)}")
        if not isinstance(granted, bool):
            raise ValueError(f"{where}.{purpose} must be true or false")
        preferences[purpose] = granted
    return preferences


def consent_event(user_id: str, preferences: dict[str, bool], *, timestamp: str, source: str) -> dict[str, Any]:
    """The track event that records a consent choice; its ``messageId`` is the same for the same choice and time."""
    identity = f"{user_id}\x00{sorted(preferences.items())}\x00{timestamp}".encode("utf-8", "surrogatepass")
    return {
        "type": "track",
        "event": CONSENT_EVENT,
        "userId": user_id,
        "timestamp": timestamp,
        "messageId": "consent-" + hashlib.blake2b(identity, digest_size=12).hexdigest(),
        "properties": {"source": source},
        "context": {"consent": {"categoryPreferences": preferences}},
    }
