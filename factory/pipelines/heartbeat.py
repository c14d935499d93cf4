"""The scheduler's heartbeat, in the broker's Redis: when did the running scheduler come back after an outage?

The scheduler process (``factory scheduler``, factory/pipelines/beat.py) beats on each of its
ticks while it holds the lock. A beat after a gap longer than ``FACTORY_SCHEDULER_OUTAGE_S`` (or
the first one ever) marks the end of an outage: ``resumed_at``. Slots that came due before then
came due while no scheduler ran, and each pipeline's catch-up policy decides what they become
(factory/pipelines/firing.py). A worker that runs the tick late (busy with a long chunk) does not
turn on-time slots into missed ones: the scheduler, not the worker, says when it was down.
"""

from __future__ import annotations

from datetime import UTC, datetime
from functools import lru_cache

import redis

HEARTBEAT_KEY = "factory:scheduler:heartbeat"
RESUMED_KEY = "factory:scheduler:resumed_at"


def beat(client: redis.Redis, now: float, outage_s: float) -> bool:
    """One beat at ``now`` (unix seconds); True when it ends an outage (then ``resumed_at`` is ``now``)."""
    previous = client.getset(HEARTBEAT_KEY, repr(now))
    if previous is not None and now - float(previous) <= outage_s:
        return False
    client.set(RESUMED_KEY, repr(now))
    return True


@lru_cache(maxsize=4)
def _client(url: str) -> redis.Redis:
    return redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5)


def resumed_at(broker_url: str | None) -> datetime | None:
    """When the running scheduler came back after its last outage; None when unknown (no scheduler has
    beaten yet, or Redis lost the key): then every due slot counts as on time."""
    if not broker_url:
        return None
    value = _client(broker_url).get(RESUMED_KEY)
    return None if value is None else datetime.fromtimestamp(float(value), UTC)
