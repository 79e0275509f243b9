"""Audit records carry a keyed hash of the person, never their id, and a consent change is recorded only once per
event and only when it changes something."""

from __future__ import annotations

import orjson

from app.audit import consent_applied, subject

SECRET = b"a-test-secret-of-32-characters!!"


def applied(before: dict[str, bool], after: dict[str, bool], message_id: str = "m-1") -> dict[str, object] | None:
    record = consent_applied(
        SECRET,
        user_id="ann",
        before=before,
        after=after,
        message_id=message_id,
        at="2026-03-01T12:00:00.000Z",
        source="websocket",
    )
    return None if record is None else orjson.loads(record)


def test_a_consent_change_names_only_the_purposes_that_changed_and_not_the_user() -> None:
    record = applied({"analytics": True, "marketing": True}, {"analytics": True, "marketing": False})
    assert record is not None
    assert record["categoryPreferences"] == {"marketing": False}
    assert record["subject"] == subject(SECRET, "ann") and record["by"] == "event:websocket"
    assert "ann" not in orjson.dumps(record).decode()


def test_a_statement_that_changes_nothing_is_not_recorded() -> None:
    assert applied({"marketing": False}, {"marketing": False}) is None


def test_a_redelivered_event_gives_the_same_record_id_and_another_event_another() -> None:
    first, again = applied({}, {"marketing": True}), applied({}, {"marketing": True})
    other = applied({}, {"marketing": True}, message_id="m-2")
    assert first is not None and again is not None and other is not None
    assert first["id"] == again["id"] != other["id"]
