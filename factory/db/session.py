"""Engines and sessions.

SQLite (the default) is shared by the API and worker processes, so it runs in WAL
mode with a busy timeout. Its automatic checkpoint (copying the write-ahead log back
into the database file) runs inside whichever commit crosses the threshold, so a
request that wrote a 50,000-line batch paid for copying all of it before answering
(0.4-0.6 s, bench/ingest.py). Instead, as the SQLite documentation suggests, commits
do not checkpoint and a daemon thread per engine runs a PASSIVE checkpoint (which
never blocks readers or writers) every second; the last connection to close
checkpoints too, so the log cannot be left behind. Every PostgreSQL connection starts in row-level
security's system mode (``factory.db.tenancy``); a request session narrows it to its tenant. Sessions
never autocommit: the caller (a request or a task) owns the transaction.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import Pool

from factory.db import tenancy

log = logging.getLogger(__name__)


def prepare_sqlite(url: str) -> None:
    """A SQLite file's folder exists (the embedded default, ``.factory/``, on a bare machine)."""
    db = make_url(url).database
    if db and db != ":memory:":
        Path(db).parent.mkdir(parents=True, exist_ok=True)


CHECKPOINT_EVERY_S = 1.0
_checkpointers: dict[tuple[int, int], threading.Thread] = {}  # (pid, id(engine)) -> its thread
_checkpointers_lock = threading.Lock()


def _ensure_checkpointer(engine: Engine) -> None:
    """One checkpoint thread per engine and process (a forked worker process starts its own)."""
    key = (os.getpid(), id(engine))
    with _checkpointers_lock:
        if key in _checkpointers:
            return
        thread = threading.Thread(target=_checkpointer, args=(weakref.ref(engine),), name="sqlite-checkpoint",
                                  daemon=True)
        _checkpointers[key] = thread
    thread.start()


def _checkpointer(engine_ref: weakref.ReferenceType[Engine]) -> None:
    """PASSIVE checkpoints of a SQLite database while its engine lives (errors are retried next time)."""
    while True:
        time.sleep(CHECKPOINT_EVERY_S)
        engine = engine_ref()
        if engine is None:
            return
        try:
            with engine.connect() as conn:
                conn.exec_driver_sql("PRAGMA wal_checkpoint(PASSIVE)")
        except Exception as exc:  # a locked or vanished database: try again later
            log.debug("sqlite checkpoint skipped: %s", type(exc).__name__)
        del engine


def _close_pool_when_collected(engine: Engine) -> None:
    """An engine this cache lets go of (it keeps eight) closes its idle connections when it is collected.

    Left to the garbage collector, a pooled psycopg connection is deleted while still open (a
    ResourceWarning, and a server-side backend held until then). ``dispose()`` swaps in a new pool, so
    every pool the engine has had is closed.
    """
    pools = [engine.pool]
    event.listen(engine, "engine_disposed", lambda disposed: pools.append(disposed.pool))
    weakref.finalize(engine, _dispose_all, pools)


def _dispose_all(pools: list[Pool]) -> None:
    for pool in pools:
        pool.dispose()


@lru_cache(maxsize=8)
def get_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        prepare_sqlite(url)
        engine = create_engine(url, connect_args={"timeout": 30}, hide_parameters=True)
        file_backed = make_url(url).database not in (None, "", ":memory:")

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.execute("PRAGMA synchronous=NORMAL")
            if file_backed:
                cur.execute("PRAGMA wal_autocheckpoint=0")  # _checkpointer does it, off the request path
            cur.close()
            if file_backed:
                _ensure_checkpointer(engine)

        return engine
    # pre-ping replaces connections a database restart killed; a bounded connect
    # timeout turns an unreachable server into a quick, retryable OperationalError.
    connect_args = {"connect_timeout": 5} if url.startswith("postgresql") else {}
    # hide_parameters: a statement error (and SQL logging) never carries the values bound to it.
    engine = create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=10, connect_args=connect_args,
                           hide_parameters=True)
    _close_pool_when_collected(engine)
    if engine.dialect.name == "postgresql":
        event.listen(engine, "connect", lambda dbapi_conn, _record: tenancy.start_in_system_mode(dbapi_conn))
    return engine


@lru_cache(maxsize=8)
def get_sessionmaker(url: str) -> sessionmaker[Session]:
    return sessionmaker(get_engine(url), expire_on_commit=False)


@contextmanager
def session_scope(url: str) -> Iterator[Session]:
    """A unit of work: commit on success, roll back on any error."""
    session = get_sessionmaker(url)()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()
