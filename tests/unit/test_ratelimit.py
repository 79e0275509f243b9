"""The collector's per-write-key token buckets (:mod:`app.ratelimit`), on a clock the tests pass in: no event loop,
no waiting."""

from __future__ import annotations

import doctest

import pytest

import app.ratelimit
from app.ratelimit import Bucket, RateLimit, RateLimiter, take

LIMIT = RateLimit(rate=100, burst=300)


def test_a_new_key_may_send_its_burst_at_once_and_then_no_more() -> None:
    limiter = RateLimiter(LIMIT)
    assert limiter.admit("wk", 200, now_s=50.0) is None
    assert limiter.admit("wk", 100, now_s=50.0) is None
    refusal = limiter.admit("wk", 1, now_s=50.0)
    assert refusal is not None and refusal.status == 429
    assert refusal.message == (
        "write key over its rate limit of 100 events/s (burst 300): 1 events need 1 more tokens; retry after 1 s"
    )


def test_tokens_come_back_at_the_rate_and_never_past_the_burst() -> None:
    limiter = RateLimiter(LIMIT)
    assert limiter.admit("wk", 300, now_s=0.0) is None
    assert limiter.admit("wk", 51, now_s=0.5) is not None  # 50 back after 0.5 s
    assert limiter.admit("wk", 50, now_s=0.5) is None
    assert limiter.admit("wk", 1, now_s=0.5) is not None
    # An hour idle refills to the burst, not to 360,000.
    assert limiter.admit("wk", 301, now_s=3600.0) is not None
    assert limiter.admit("wk", 300, now_s=3600.0) is None
    assert limiter.admit("wk", 1, now_s=3600.0) is not None


def test_a_batch_is_admitted_whole_or_refused_whole_taking_no_tokens() -> None:
    limiter = RateLimiter(LIMIT)
    assert limiter.admit("wk", 250, now_s=0.0) is None
    assert limiter.admit("wk", 100, now_s=0.0) is not None  # 50 left: the 100 are refused together
    assert limiter.admit("wk", 50, now_s=0.0) is None  # and the refusal took none of the 50


def test_retry_after_is_the_whole_seconds_until_the_tokens_are_back() -> None:
    limiter = RateLimiter(RateLimit(rate=10, burst=100))
    assert limiter.admit("wk", 100, now_s=0.0) is None
    cases = [(1, 1), (10, 1), (11, 2), (25, 3), (100, 10)]
    for events, retry_after_s in cases:
        refusal = limiter.admit("wk", events, now_s=0.0)
        assert refusal is not None and refusal.retry_after_s == retry_after_s, events
        assert refusal.message.endswith(f"retry after {retry_after_s} s")
    # Retrying after Retry-After seconds succeeds (nobody else spent the key's tokens meanwhile).
    assert limiter.admit("wk", 25, now_s=3.0) is None


def test_retry_after_is_not_pushed_a_second_later_by_float_noise() -> None:
    # 4.1 s at 30 tokens/s is 123 tokens, 30 short of 153: 1 s exactly, though the floats make it 1.0000000000000004.
    _, refusal = take(Bucket(0.0, 0.0), 153, RateLimit(rate=30, burst=200), now_s=4.1)
    assert refusal is not None and refusal.retry_after_s == 1


def test_a_batch_larger_than_the_burst_can_never_pass_and_says_to_split_it() -> None:
    limiter = RateLimiter(RateLimit(rate=100, burst=50))
    refusal = limiter.admit("wk", 51, now_s=0.0)
    assert refusal is not None
    assert refusal.status == 413  # not 429: the SDKs would retry it forever
    assert refusal.retry_after_s is None
    assert "can never pass" in refusal.message and "split it into batches of at most 50 events" in refusal.message
    assert limiter.admit("wk", 50, now_s=0.0) is None  # it took nothing


def test_a_flood_on_one_key_refuses_no_other_key() -> None:
    limiter = RateLimiter(LIMIT)
    assert limiter.admit("flood", 300, now_s=0.0) is None
    assert all(limiter.admit("flood", 100, now_s=0.0) is not None for _ in range(10))
    assert limiter.admit("calm", 300, now_s=0.0) is None


def test_rate_zero_admits_everything() -> None:
    limiter = RateLimiter(RateLimit(rate=0, burst=1))
    assert all(limiter.admit("wk", 2_500, now_s=0.0) is None for _ in range(100))


def test_a_clock_read_out_of_order_neither_drains_nor_fills_the_bucket() -> None:
    limiter = RateLimiter(LIMIT)
    assert limiter.admit("wk", 300, now_s=10.0) is None
    assert limiter.admit("wk", 1, now_s=9.0) is not None
    assert limiter.admit("wk", 100, now_s=11.0) is None  # refilled from 10.0, not from 9.0


@pytest.mark.parametrize("module", [app.ratelimit])
def test_the_docstring_example_holds(module: object) -> None:
    assert doctest.testmod(module).failed == 0  # type: ignore[arg-type]
