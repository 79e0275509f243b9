"""A consent withdrawal takes back the user's messages of that purpose that were not shown yet (ws.delivery)."""

from __future__ import annotations

import orjson
import pytest

from ws.delivery import WITHDRAWAL, Outgoing, Withdrawal, apply_withdrawals, outgoing


def message(user: str, message_id: str, consent: str | None) -> Outgoing:
    return Outgoing(user, message_id, {"title": message_id}, 1, consent)


def test_a_withdrawal_drops_the_earlier_messages_of_its_purposes_for_its_user_only() -> None:
    records = [
        message("ann", "offer-1", "marketing"),
        message("ann", "tip-1", "personalization"),
        message("bob", "offer-2", "marketing"),
        message("ann", "old", None),  # from before decision records said their purpose: taken back to be safe
        Withdrawal("ann", frozenset({"marketing"})),
        message("ann", "offer-3", "marketing"),  # decided after a new grant: stays
    ]
    messages, withdrawals = apply_withdrawals(records)
    assert [m.message_id for m in messages] == ["tip-1", "offer-2", "offer-3"]
    assert withdrawals == [Withdrawal("ann", frozenset({"marketing"}))]


def test_decision_and_withdrawal_records_are_read_from_the_topic() -> None:
    decision = {
        "id": "m1",
        "userId": "ann",
        "trigger": "help_offer",
        "timestamp": "2026-11-30T00:00:00.000Z",
        "outcome": "sent",
        "consent": "marketing",
        "message": {"title": "Need a hand?", "body": ""},
    }
    read = outgoing(orjson.dumps(decision))
    assert isinstance(read, Outgoing) and (read.message_id, read.consent) == ("m1", "marketing")
    assert read.payload["consent"] == "marketing"  # the browser takes the pop-up back if marketing is withdrawn
    withdrawal = {"type": WITHDRAWAL, "userId": "ann", "purposes": ["marketing"], "timestamp": "2026-11-30T00:00:01Z"}
    assert outgoing(orjson.dumps(withdrawal)) == Withdrawal("ann", frozenset({"marketing"}))


@pytest.mark.parametrize(
    ("record", "reason"),
    [
        ({"type": WITHDRAWAL, "purposes": ["marketing"]}, "a withdrawal's userId must be a non-empty string"),
        ({"type": WITHDRAWAL, "userId": "ann", "purposes": []}, "purposes must be a non-empty list"),
        ({"type": WITHDRAWAL, "userId": "ann", "purposes": "marketing"}, "purposes must be a non-empty list"),
    ],
)
def test_a_malformed_withdrawal_is_refused_with_the_reason(record: dict[str, object], reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        outgoing(orjson.dumps(record))
