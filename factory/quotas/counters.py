"""Counters in Redis, kept by the ``limits`` library: its moving window for request rates, its
sliding window counter for items per day.

The Redis is the broker's (``FACTORY_BROKER_URL``; ``make demo``'s embedded one is a
``redis://`` URL like any other). Without a broker URL (tests of the API alone) the
counters live in this process's memory.

When Redis cannot be reached the counters **fail open**: the request or the submit is
let through, a warning is logged (at most once a minute), and Redis is not asked again
for a few seconds, so an outage neither turns every request into an error nor makes each
one wait for a connect timeout. Rate limits protect the service; an unreachable Redis
already stops new work reaching the workers, and the database quotas (concurrent jobs,
queued items) still hold.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from dataclasses import dataclass
from typing import cast

import redis
from limits import RateLimitItem, RateLimitItemPerDay, RateLimitItemPerSecond
from limits.errors import ConfigurationError, StorageError
from limits.storage import Storage, storage_from_string
from limits.strategies import MovingWindowRateLimiter, RateLimiter, SlidingWindowCounterRateLimiter

log = logging.getLogger(__name__)

KEY_PREFIX = "factory-limits"
# After a failed call, Redis is left alone this long (the counters answer "allowed" meanwhile).
SKIP_AFTER_FAILURE_S = 5.0
WARN_EVERY_S = 60.0
_REDIS_OPTIONS: dict[str, float | str | bool] = {"socket_connect_timeout": 1.0, "socket_timeout": 1.0}


@dataclass(frozen=True)
class Verdict:
    """One limit's answer: ``allowed``, its ``limit``, what is ``remaining`` and seconds until a unit frees up."""

    allowed: bool
    limit: int
    remaining: int
    reset_in_s: int


def storage_url(broker_url: str | None) -> str:
    """The ``limits`` storage URI for a broker URL (kombu writes a unix socket as ``redis+socket://``)."""
    if not broker_url:
        return "memory://"
    if broker_url.startswith("redis+socket://"):
        return "redis+unix://" + broker_url.removeprefix("redis+socket://")
    return broker_url


class Counters:
    def __init__(self, broker_url: str | None) -> None:
        uri = storage_url(broker_url)
        try:
            self.storage = cast(Storage, storage_from_string(
                uri, wrap_exceptions=True, key_prefix=KEY_PREFIX,
                **(_REDIS_OPTIONS if not uri.startswith("memory") else {})))
        except ConfigurationError:
            log.warning("rate limits: the broker URL's scheme is not one limits can count in; "
                        "counting in this process's memory instead")
            self.storage = cast(Storage, storage_from_string("memory://"))
        self.moving: RateLimiter = MovingWindowRateLimiter(self.storage)
        self.sliding: RateLimiter = SlidingWindowCounterRateLimiter(self.storage)
        self._skip_until = 0.0
        self._warned_at = -math.inf

    def requests(self, limit: int, window_s: int, *identifiers: str) -> Verdict | None:
        """One request against ``limit`` per ``window_s`` (moving window); None while Redis is away."""
        return self._hit(self.moving, RateLimitItemPerSecond(limit, window_s), 1, identifiers)

    def items_per_day(self, limit: int, cost: int, *identifiers: str) -> Verdict | None:
        """``cost`` items against ``limit`` per day (sliding window counter: constant memory whatever the
        cost, where a moving window keeps one entry per item); None while Redis is away."""
        return self._hit(self.sliding, RateLimitItemPerDay(limit), cost, identifiers)

    def _hit(self, limiter: RateLimiter, item: RateLimitItem, cost: int,
             identifiers: tuple[str, ...]) -> Verdict | None:
        if time.monotonic() < self._skip_until:
            return None
        try:
            allowed = limiter.hit(item, *identifiers, cost=cost)
            reset_at, remaining = limiter.get_window_stats(item, *identifiers)
        except (StorageError, redis.RedisError, OSError) as exc:
            self._failed(exc)
            return None
        return Verdict(allowed, item.amount, max(0, remaining), max(1, math.ceil(reset_at - time.time())))

    def _failed(self, exc: Exception) -> None:
        now = time.monotonic()
        self._skip_until = now + SKIP_AFTER_FAILURE_S
        if now - self._warned_at >= WARN_EVERY_S:
            self._warned_at = now
            cause = exc.__cause__ or exc
            log.warning("rate limits and items_per_day are not enforced: Redis is unreachable (%s); "
                        "letting requests through", type(cause).__name__)


_counters: dict[str | None, Counters] = {}
_lock = threading.Lock()


def for_broker(broker_url: str | None) -> Counters:
    """One ``Counters`` (one connection pool) per broker URL, per process."""
    with _lock:
        if broker_url not in _counters:
            _counters[broker_url] = Counters(broker_url)
        return _counters[broker_url]
