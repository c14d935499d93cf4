"""Writing a job whose items arrive as a stream (a 50,000-line batch file, a chat request).

``create_job`` builds every item in memory because a personalization job is one
JSON body anyway. A batch file is not: its lines are read one at a time, so this
writer assigns items to chunks as they come and inserts them in bounded groups,
keeping memory flat whatever the file's size. Nothing commits here: the caller
owns the transaction, so a file that turns out bad half-way is rolled back whole.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from factory.config import Settings
from factory.db.base import new_id, utcnow
from factory.db.models import ChunkState, ItemState, Job, JobStatus
from factory.jobs.repository import JobRepository, json_text
from factory.outbox.repository import OutboxRepository
from factory.provenance.hashing import sha256_text
from factory.queue import GENERATE_CHUNK_TASK

EMPTY_TEMPLATE_SHA256 = sha256_text("")


class JobWriter:
    """Append items to a new job; ``finish()`` fixes the counts and writes one outbox message per chunk."""

    def __init__(self, session: Session, settings: Settings, *, tenant_id: str, kind: str, model: str,
                 queue: str, params: dict[str, Any], seed: int, options: dict[str, Any] | None = None,
                 flush_every: int = 2000) -> None:
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
        self.chunk_ids: list[str] = []
        self._chunks: list[dict[str, Any]] = []
        self._items: list[tuple[Any, ...]] = []
        self._last_request: dict[str, Any] | None = None
        self._last_request_json: str | None = None
        self.count = 0

    def add(self, *, key: str, variant: int, record: dict[str, Any], prompt: str, prompt_sha256: str,
            request: dict[str, Any] | None, seed: int, error: str | None = None) -> None:
        """One item; ``error`` makes it born failed (a line we accept but cannot run)."""
        if self.count % self.chunk_size == 0:
            chunk_id = new_id("chk")
            self.chunk_ids.append(chunk_id)
            self._chunks.append({"id": chunk_id, "tenant_id": self.tenant_id, "job_id": self.job.id,
                                 "seq": len(self.chunk_ids) - 1, "state": ChunkState.PENDING, "attempts": 0,
                                 "created_at": self.now})
        if request is not self._last_request:  # the n items of one line share their request
            self._last_request, self._last_request_json = request, json_text(request)
        state, finished_at = (ItemState.PENDING.value, None) if error is None else (ItemState.FAILED.value, self.now)
        # In ITEM_COLUMNS order.
        self._items.append((new_id("itm"), self.tenant_id, self.job.id, self.chunk_ids[-1], self.count, key, variant,
                            json_text(record), prompt, self._last_request_json, prompt_sha256, seed, state, error,
                            finished_at))
        self.count += 1
        if len(self._items) >= self.flush_every:
            self.flush()

    def flush(self) -> None:
        """Insert what is buffered: chunks first (items reference them)."""
        if self._chunks:
            self.repo.add_chunks(self._chunks)
            self._chunks = []
        if self._items:
            self.repo.add_item_rows(self._items)
            self._items = []

    def finish(self) -> list[str]:
        """Flush, record the totals on the job and queue one message per chunk; returns the outbox ids."""
        self.flush()
        self.job.item_count, self.job.chunk_count = self.count, len(self.chunk_ids)
        self.session.flush()
        return OutboxRepository(self.session).add_many(GENERATE_CHUNK_TASK, self.job.queue,
                                                       [[c] for c in self.chunk_ids])
