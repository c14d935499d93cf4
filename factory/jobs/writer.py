"""Writing a job whose items arrive as a stream (a 50,000-line batch file, a chat request).

``create_job`` builds every item in memory because a personalization job is one
JSON body anyway. A batch file is not: its lines are read one at a time, so this
writer assigns items to chunks as they come and inserts them in bounded groups,
keeping memory flat whatever the file's size. Nothing commits here: the caller
owns the transaction, so a file that turns out bad half-way is rolled back whole.

With ``background=True`` the groups are inserted by a thread of the writer while the
caller goes on reading lines. That pays on PostgreSQL, where COPY streams to a server
working on the other core; not on SQLite, whose driver releases and retakes the GIL
around every row, so the thread ends up waiting for the parser (bench/ingest.py; the
batch service picks per database). The session is handed over, never shared: while
the thread runs, only the thread touches it, and ``finish``/``close`` take it back
(joining the thread) before the caller uses it again. At most two groups wait for the thread, so memory stays bounded.
"""

from __future__ import annotations

import threading
from queue import Queue
from types import TracebackType
from typing import Any

from sqlalchemy.orm import Session

from factory.config import Settings
from factory.db.base import IdMaker, new_id, utcnow
from factory.db.models import ChunkState, ItemState, Job, JobStatus
from factory.jobs.repository import JobRepository, json_text
from factory.outbox.repository import OutboxRepository, Pending
from factory.provenance.hashing import sha256_text
from factory.queue import GENERATE_CHUNK_TASK

EMPTY_TEMPLATE_SHA256 = sha256_text("")
_PENDING, _FAILED = ItemState.PENDING.value, ItemState.FAILED.value
_STOP = object()


class JobWriter:
    """Append items to a new job; ``finish()`` fixes the counts and writes one outbox message per chunk.

    Use it as a context manager when ``background=True``: leaving the block (by an
    exception too) stops the thread before anything else touches the session.
    """

    def __init__(self, session: Session, settings: Settings, *, tenant_id: str, kind: str, model: str,
                 queue: str, params: dict[str, Any], seed: int, options: dict[str, Any] | None = None,
                 flush_every: int = 2000, background: bool = False) -> None:
        self.session = session
        self.repo = JobRepository(session)
        self.tenant_id = tenant_id
        self.chunk_size = settings.chunk_size
        self.flush_every = flush_every
        self.now = utcnow()
        self.job = Job(
            id=new_id("job"), tenant_id=tenant_id, kind=kind, status=JobStatus.QUEUED, model=model, queue=queue,
            template="", template_sha256=EMPTY_TEMPLATE_SHA256, system_prompt=None, params=params, seed=seed,
            variants=1, item_count=0, chunk_count=0, options=options or {}, created_at=self.now,
        )
        self.repo.add_job(self.job)
        self._job_id = self.job.id
        self.chunk_ids: list[str] = []
        self._chunks: list[dict[str, Any]] = []
        self._items: list[tuple[Any, ...]] = []
        self._last_request: dict[str, Any] | None = None
        self._last_request_json: str | None = None
        self._item_id = IdMaker("itm")
        self._chunk_id = IdMaker("chk")
        self.count = 0
        self.messages: list[Pending] = []  # the outbox messages finish() wrote, to publish after commit
        self._thread: threading.Thread | None = None
        self._queue: Queue[Any] = Queue(maxsize=2)
        self._error: BaseException | None = None
        if background:
            self.session.flush()  # the job row, before the thread owns the session
            self._thread = threading.Thread(target=self._drain, name=f"writer-{self.job.id}", daemon=True)
            self._thread.start()

    # --- adding ---------------------------------------------------------------------
    def add(self, *, key: str, variant: int, record: dict[str, Any] | None = None, prompt: str,
            prompt_sha256: str, request: dict[str, Any] | None, seed: int, error: str | None = None,
            record_json: str | None = None, request_json: str | None = None) -> None:
        """One item; ``error`` makes it born failed (a line we accept but cannot run).

        ``record_json``/``request_json`` are the record/request already as JSON text (callers
        writing many similar rows build them cheaper than a serializer call); otherwise
        ``record``/``request`` are serialized.
        """
        if self.count % self.chunk_size == 0:
            chunk_id = self._chunk_id()
            self.chunk_ids.append(chunk_id)
            self._chunks.append({"id": chunk_id, "tenant_id": self.tenant_id, "job_id": self._job_id,
                                 "seq": len(self.chunk_ids) - 1, "state": ChunkState.PENDING, "attempts": 0,
                                 "created_at": self.now, "enqueued_at": self.now})
        if request_json is not None:
            self._last_request, self._last_request_json = None, request_json
        elif request is not self._last_request:  # the n items of one line share their request
            self._last_request, self._last_request_json = request, json_text(request)
        # In ITEM_COLUMNS order.
        self._items.append((self._item_id(), self.tenant_id, self._job_id, self.chunk_ids[-1], self.count, key,
                            variant, record_json if record_json is not None else json_text(record), prompt,
                            self._last_request_json, prompt_sha256, seed,
                            _PENDING if error is None else _FAILED, error, None if error is None else self.now))
        self.count += 1
        if len(self._items) >= self.flush_every:
            self.flush()

    def flush(self) -> None:
        """Insert what is buffered (or hand it to the thread): chunks first, items reference them."""
        chunks, items = self._chunks, self._items
        self._chunks, self._items = [], []
        if not chunks and not items:
            return
        if self._thread is None:
            self._write(chunks, items)
            return
        self._raise_if_failed()
        self._queue.put((chunks, items))

    def finish(self) -> list[str]:
        """Flush, record the totals on the job and queue one message per chunk; returns the outbox ids."""
        self.flush()
        self.close()
        self._raise_if_failed()
        self.job.item_count, self.job.chunk_count = self.count, len(self.chunk_ids)
        self.session.flush()
        self.messages = OutboxRepository(self.session).add_pending(GENERATE_CHUNK_TASK, self.job.queue,
                                                                   [[c] for c in self.chunk_ids])
        return [m.id for m in self.messages]

    # --- the thread --------------------------------------------------------------------
    def close(self) -> None:
        """Stop the thread (after what it was given is written, or failed); the session is the caller's again."""
        thread, self._thread = self._thread, None
        if thread is None:
            return
        self._queue.put(_STOP)
        thread.join()

    def __enter__(self) -> JobWriter:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def _drain(self) -> None:
        while True:
            work = self._queue.get()
            if work is _STOP:
                return
            if self._error is None:  # after a failure, keep taking work so the producer never blocks
                try:
                    self._write(*work)
                except BaseException as exc:  # handed to the caller's thread by _raise_if_failed
                    self._error = exc

    def _raise_if_failed(self) -> None:
        if self._error is not None:
            raise self._error

    def _write(self, chunks: list[dict[str, Any]], items: list[tuple[Any, ...]]) -> None:
        if chunks:
            self.repo.add_chunks(chunks)
        if items:
            self.repo.add_item_rows(items)
