"""How the HTTP sender reads a collector's ``Retry-After``."""

from __future__ import annotations

import pytest

from app.sending import MAX_RETRY_WAIT_S, retry_after_s


@pytest.mark.parametrize(
    ("header", "wait_s"),
    [
        ("5", 5.0),
        ("0", 0.1),  # never a busy loop
        ("86400", MAX_RETRY_WAIT_S),  # a sender that waits a day looks hung: it tries again sooner
        (None, 1.0),
        ("Wed, 21 Oct 2026 07:28:00 GMT", 1.0),  # the date form: the collector never sends it
        ("nan", 1.0),
    ],
)
def test_retry_after_is_read_in_seconds_and_bounded(header: str | None, wait_s: float) -> None:
    assert retry_after_s(header) == wait_s
