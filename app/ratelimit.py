"""The collector's per-write-key rate limit: token buckets counted in events, decided without I/O.

One write key flooding the collector must not starve the others sharing the worker's event loop. Each key has a
bucket of at most ``burst`` tokens that refills at ``rate`` tokens a second; a request of ``n`` events takes ``n``
tokens or none: a batch is admitted whole or refused whole, so nothing is half-sent. The caller passes the time
(:func:`time.monotonic` in :mod:`app.collector`, any number in tests) and turns a :class:`Refusal` into its answer.

>>> limiter = RateLimiter(RateLimit(rate=10, burst=20))
>>> limiter.admit("wk", 20, now_s=0.0) is None
True
>>> refusal = limiter.admit("wk", 5, now_s=0.2)  # 2 tokens back after 0.2 s, 3 short: back in 0.3 s
>>> refusal.status, refusal.retry_after_s
(429, 1)
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True, slots=True, kw_only=True)
class RateLimit:
    """``rate`` events a second per write key, up to ``burst`` at once; ``rate`` 0 admits everything."""

    rate: int
    burst: int

    @property
    def enabled(self) -> bool:
        return self.rate > 0


@dataclass(frozen=True, slots=True)
class Bucket:
    """The tokens a write key had at ``at_s`` (the caller's clock)."""

    tokens: float
    at_s: float

    def refilled(self, limit: RateLimit, now_s: float) -> Bucket:
        """The bucket at ``now_s``: refilled at ``limit.rate``, never past ``limit.burst``."""
        # max(0, ...): a clock read out of order must not drain the bucket.
        elapsed_s = max(0.0, now_s - self.at_s)
        return Bucket(min(float(limit.burst), self.tokens + elapsed_s * limit.rate), max(now_s, self.at_s))


@dataclass(frozen=True, slots=True)
class Refusal:
    """A request the limit refuses, whole: answer ``status`` with ``message`` and, if set, ``Retry-After``."""

    status: int
    message: str
    #: Whole seconds until the key has the tokens (``None``: the request can never pass as it is).
    retry_after_s: int | None


def take(bucket: Bucket, events: int, limit: RateLimit, now_s: float) -> tuple[Bucket, Refusal | None]:
    """The bucket after a request of ``events`` events at ``now_s``, and its :class:`Refusal` if it is refused.

    A refused request takes no tokens. A request larger than the burst can never be admitted: it is refused with
    413 and the largest size that can pass (the SDKs retry a 429, and would retry this one forever).
    """
    current = bucket.refilled(limit, now_s)
    if events > limit.burst:
        message = (
            f"{events} events in one request are over the rate limit's burst of {limit.burst} events per write key: "
            f"it can never pass; split it into batches of at most {limit.burst} events"
        )
        return current, Refusal(413, message, None)
    if events <= current.tokens:
        return Bucket(current.tokens - events, current.at_s), None
    missing = events - current.tokens
    # Rounded first so that float noise (2.0000000001 s) does not add a whole second.
    retry_after_s = max(1, math.ceil(round(missing / limit.rate, 6)))
    message = (
        f"write key over its rate limit of {limit.rate} events/s (burst {limit.burst}): {events} events need "
        f"{math.ceil(missing)} more tokens; retry after {retry_after_s} s"
    )
    return current, Refusal(429, message, retry_after_s)


class RateLimiter:
    """The buckets of every write key seen, each starting full.

    Keys are only the collector's configured write keys (checked before the limit), so the buckets stay few.
    The limit holds per process: with W workers behind a load balancer a key is admitted up to W times ``rate``.
    """

    def __init__(self, limit: RateLimit) -> None:
        self.limit = limit
        self._buckets: dict[str, Bucket] = {}

    def admit(self, key: str, events: int, *, now_s: float) -> Refusal | None:
        """Take ``events`` tokens from ``key``'s bucket, or none and return why the request is refused."""
        if not self.limit.enabled:
            return None
        bucket = self._buckets.get(key) or Bucket(float(self.limit.burst), now_s)
        self._buckets[key], refusal = take(bucket, events, self.limit, now_s)
        return refusal
