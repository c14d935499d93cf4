"""The one way a job is written: its row, its chunks, its items and one outbox message per chunk.

Every kind writes through ``JobWriter`` (personalization, campaigns, augmentation, batches,
chat): items are assigned to chunks as they come (``chunk_size`` each, or what
``use_chunk_size`` sets for the items that follow) and inserted in bounded groups, keeping
memory flat. A batch file adds chunks whose items are deferred instead
(``add_deferred_chunk``: the worker that claims one writes them). Every chunk is written
with ``enqueued_at``, which the reconciler's lost-wake-up check reads. ``finish`` admits
the job against its tenant's quotas and writes the outbox. Nothing commits here: the
caller owns the transaction (commit, then publish), so a request that turns out bad
half-way is rolled back whole.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from factory.config import Settings
from factory.db.base import IdMaker, new_id, utcnow
from factory.db.models import ChunkState, ItemState, Job, JobStatus
from factory.jobs.repository import JobRepository, json_text
from factory.lineage import events as lineage
from factory.outbox.repository import OutboxRepository, Pending
from factory.provenance.hashing import EMPTY_SHA256
from factory.queue import GENERATE_CHUNK_TASK
from factory.quotas.service import admit

_PENDING, _FAILED = ItemState.PENDING.value, ItemState.FAILED.value
# session.info key: this session only rehearses a submission and is always rolled back (``rehearsal``).
_REHEARSAL = "job_writer.rehearsal"


def rehearsal(session: Session) -> Session:
    """Mark ``session`` as one whose jobs are written only to be checked, then rolled back whole (a
    scheduled pipeline's spec, validated by the kind's own create function when it is saved): ``finish``
    spends no quota there, since nothing will run."""
    session.info[_REHEARSAL] = True
    return session


class JobWriter:
    """Append items (or deferred chunks) to a new job; ``finish()`` fixes the counts and writes one
    outbox message per chunk."""

    def __init__(self, session: Session, settings: Settings, *, tenant_id: str, kind: str, model: str,
                 queue: str, params: dict[str, Any], seed: int, options: dict[str, Any] | None = None,
                 template: str = "", template_sha256: str = EMPTY_SHA256, system_prompt: str | None = None,
                 variants: int = 1, job_id: str | None = None, flush_every: int = 2000,
                 chunk_size: int | None = None) -> None:
        self.session = session
        self.settings = settings
        self.repo = JobRepository(session)
        self.tenant_id = tenant_id
        self.chunk_size = chunk_size or settings.chunk_size
        self.flush_every = flush_every
        self.now = utcnow()
        self.job = Job(
            id=job_id or new_id("job"), tenant_id=tenant_id, kind=kind, status=JobStatus.QUEUED, model=model,
            queue=queue, template=template, template_sha256=template_sha256, system_prompt=system_prompt,
            params=params, seed=seed, variants=variants, item_count=0, chunk_count=0, options=options or {},
            created_at=self.now,
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
        self.prompt_bytes = 0  # of the items added here (a deferred chunk's are bounded per line)
        self._in_chunk = 0  # items in the chunk ``add`` fills
        self.messages: list[Pending] = []  # the outbox messages finish() wrote, to publish after commit

    # --- adding ---------------------------------------------------------------------
    def add(self, *, key: str, variant: int, record: dict[str, Any] | None = None, prompt: str,
            prompt_sha256: str, request: dict[str, Any] | None, seed: int, error: str | None = None,
            record_json: str | None = None, request_json: str | None = None) -> None:
        """One item; ``error`` makes it born failed (a line we accept but cannot run).

        ``record_json``/``request_json``: ``record``/``request`` already as JSON text (a batch's chat
        line builds them so), else they are serialized here.
        """
        if self._in_chunk in (0, self.chunk_size):
            self._new_chunk()
            self._in_chunk = 0
        self._in_chunk += 1
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
        self.prompt_bytes += len(prompt.encode())
        if len(self._items) >= self.flush_every:
            self.flush()

    def add_deferred_chunk(self, pending_lines: dict[str, Any]) -> None:
        """A chunk whose ``pending_lines["items"]`` items the worker claiming it writes (a batch file's
        lines, see factory/batches/chunks.py); its items come next in the job's order (``seq`` is set
        here). Items added after it start a chunk of their own."""
        self._new_chunk({**pending_lines, "seq": self.count})
        self._in_chunk = 0
        self.count += pending_lines["items"]
        if len(self._chunks) >= self.flush_every:
            self.flush()

    def end_chunk(self) -> None:
        """The next item added starts a new chunk (the items of one batch line get chunks of their own)."""
        self._in_chunk = 0

    def use_chunk_size(self, size: int) -> None:
        """Items added from now on go into new chunks of ``size`` (rule-based augmentation takes more)."""
        self.end_chunk()
        self.chunk_size = size

    def _new_chunk(self, pending_lines: dict[str, Any] | None = None) -> None:
        chunk_id = self._chunk_id()
        self.chunk_ids.append(chunk_id)
        self._chunks.append({"id": chunk_id, "tenant_id": self.tenant_id, "job_id": self._job_id,
                             "seq": len(self.chunk_ids) - 1, "state": ChunkState.PENDING, "attempts": 0,
                             "created_at": self.now, "enqueued_at": self.now, "pending_lines": pending_lines})

    def flush(self) -> None:
        """Insert what is buffered: chunks first, items reference them."""
        chunks, items = self._chunks, self._items
        self._chunks, self._items = [], []
        if chunks:
            self.repo.add_chunks(chunks)
        if items:
            self.repo.add_item_rows(items)

    def finish(self) -> list[str]:
        """Flush, record the totals on the job and queue one message per chunk; returns the outbox ids."""
        self.flush()
        self.job.item_count, self.job.chunk_count = self.count, len(self.chunk_ids)
        # Refused: the caller's transaction rolls all of it back.
        if not self.session.info.get(_REHEARSAL):
            admit(self.session, self.settings, self.job, prompt_bytes=self.prompt_bytes)
        self.session.flush()
        self.messages = OutboxRepository(self.session).add_pending(GENERATE_CHUNK_TASK, self.job.queue,
                                                                   [[c] for c in self.chunk_ids])
        return [m.id for m in self.messages] + lineage.request(self.session, self.settings, self.job, lineage.START)
