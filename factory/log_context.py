"""The ids a log line is about (tenant, job, chunk, item, request, task), kept in a context variable.

Whoever learns an id binds it, once: a request's middleware its request id and, after the key
check, its tenant; a task's start its task id; the chunk runner the chunk, then the job and tenant it
claimed. Every log record made in that context carries them (``factory.logs`` copies them onto the
record), so a JSON log line names what it is about without each call site repeating it. Only ids
and numbers belong here: never a record value, a prompt or a generated text.

A context variable rather than thread-local state: each asyncio task (an API request) and each
thread gets its own copy, and ``scope`` restores what was there before, whatever was bound inside.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar, Token

Fields = dict[str, str | int | float]

_fields: ContextVar[Fields | None] = ContextVar("factory_log_fields", default=None)


def current() -> Fields:
    """What is bound now (a copy-on-write dict: do not change it)."""
    return _fields.get() or {}


def bind(**fields: str | int | float | None) -> Token[Fields | None]:
    """Add ``fields`` (None values are left out) to what log records carry from now on in this context."""
    return _fields.set({**current(), **{k: v for k, v in fields.items() if v is not None}})


def reset(token: Token[Fields | None]) -> None:
    _fields.reset(token)


@contextmanager
def scope(**fields: str | int | float | None) -> Iterator[None]:
    """Bind ``fields`` for the block; afterwards the context is as before (inner binds included)."""
    token = bind(**fields)
    try:
        yield
    finally:
        _fields.reset(token)
