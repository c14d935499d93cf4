"""Which errors mean "a service is briefly away" (wait and retry) rather than "this work is bad".

A chunk that fails for a transient reason keeps its attempt: a database restart
or an S3 outage must delay work, never dead-letter it.
"""

from __future__ import annotations

import random

import kombu.exceptions
import redis.exceptions
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError

from factory.errors import QueueUnavailable, StorageError

_TRANSIENT: tuple[type[BaseException], ...] = (
    OperationalError,  # connection refused/lost, server shutting down, deadlock, SQLite busy
    InterfaceError,
    StorageError,
    QueueUnavailable,
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    kombu.exceptions.OperationalError,
    ConnectionError,
    TimeoutError,
)


def is_transient(exc: BaseException) -> bool:
    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return True
    return isinstance(exc, _TRANSIENT)


def retry_delay(attempt: int, cap_s: float = 60.0) -> float:
    """Exponential backoff with jitter: 1, 2, 4 ... seconds, at most ``cap_s``."""
    base = min(cap_s, 2.0 ** max(0, attempt))
    return base * random.uniform(0.75, 1.0)
