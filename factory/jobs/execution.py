"""The worker-facing rules for running a chunk: claim it, record outcomes, close the job.

Plain functions over a session, so the Celery task stays thin and these rules are
testable without a broker. Nothing here commits.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy.orm import Session

from factory.db.base import utcnow
from factory.db.models import Chunk, ChunkState, Item, ItemState, Job, JobStatus
from factory.jobs.repository import JobRepository
from factory.outbox.repository import OutboxRepository
from factory.provenance import manifest as prov_manifest
from factory.provenance import marking
from factory.provenance.hashing import canonical_json
from factory.queue import FINALIZE_JOB_TASK
from factory.storage import ObjectStore
from factory.storage.keys import job_provenance_key


@dataclass(frozen=True)
class CheckOutcome:
    """How an item's output fared against its kind's checks (campaign copy): stored on the item."""

    status: str  # "passed" or "failed"
    failed_checks: list[str]
    fields: dict[str, Any]


class UnreadableChunk(Exception):
    """A chunk's deferred items cannot be written: what they come from is gone or changed. It fails."""


# Writes the items of a chunk planned with ``pending_lines`` (the job's kind knows how), in the claim's transaction.
ItemWriter = Callable[[Session, Job, Chunk], object]


@dataclass(frozen=True)
class DeferredItems:
    """What a worker needs to fetch a deferred chunk's source (a batch file's lines)."""

    kind: str
    options: dict[str, Any]
    pending_lines: dict[str, Any]


class SourceNeeded(Exception):
    """Raised by an ItemWriter inside the claim when it needs the chunk's source first: the caller
    rolls the claim back, fetches the source outside any transaction (storage being slow or away then
    holds no lock and no lease) and claims again. Other chunks claim in one transaction, as before."""

    def __init__(self, deferred: DeferredItems) -> None:
        super().__init__(f"the source of a deferred '{deferred.kind}' chunk is needed")
        self.deferred = deferred


@dataclass(frozen=True)
class ClaimedChunk:
    chunk: Chunk
    job: Job
    items: list[Item]


def lease_owner(task_id: str, host: str, pid: int) -> str:
    """Who holds a chunk: the task (message) id, then where it runs (for operators and tests)."""
    return f"{task_id}@{host}:{pid}"


def claim(session: Session, chunk_id: str, owner: str, lease_s: float, *,
          max_attempts: int | None = None, write_items: ItemWriter | None = None) -> ClaimedChunk | None:
    """Lease the chunk to ``owner``; None if it is finished, cancelled, leased elsewhere or out of attempts.

    A chunk whose items were deferred (``pending_lines``: a batch file's lines) gets them
    written by ``write_items`` in this same transaction, so the lease and the items
    commit together: of two claims one wins, and the items are written once.
    """
    repo = JobRepository(session)
    chunk = repo.claim_chunk(chunk_id, owner, timedelta(seconds=lease_s), max_attempts=max_attempts)
    if chunk is None:
        return None
    job = session.get(Job, chunk.job_id)
    assert job is not None
    if chunk.pending_lines is not None:
        if write_items is None:
            raise UnreadableChunk(f"no way to write the deferred items of a '{job.kind}' chunk")
        write_items(session, job, chunk)
    repo.mark_job_running(job.id, utcnow())
    return ClaimedChunk(chunk=chunk, job=job, items=repo.pending_items(chunk_id))


def fail_unreadable(session: Session, chunk_id: str, reason: str) -> list[str]:
    """Fail a chunk whose items could not be written (``UnreadableChunk``) unless someone holds it;
    outbox ids (the job's finalization if it was the last) to relay after commit."""
    repo = JobRepository(session)
    chunk = repo.get_chunk(chunk_id)
    if chunk is None or not repo.fail_unclaimed(chunk_id, reason):
        return []
    return request_finalization(session, chunk.job_id)


def renew_lease(session: Session, chunk_id: str, owner: str, lease_s: float) -> bool:
    return JobRepository(session).renew_lease(chunk_id, owner, timedelta(seconds=lease_s))


def record_success(session: Session, item: Item, text: str, provenance: dict[str, Any],
                   checks: CheckOutcome | None = None) -> None:
    """The item's text with its record, marked as machine-made and hashed (``provenance.marking``)."""
    marked = marking.mark(provenance, text)
    JobRepository(session).save_item_outcome(item.id, state=ItemState.SUCCEEDED, text=text, error=None,
                                             provenance=marked, checks=_check_columns(checks),
                                             content_sha256=marked["content_sha256"])


def record_failure(session: Session, item: Item, error: str, provenance: dict[str, Any] | None = None,
                   checks: CheckOutcome | None = None) -> None:
    JobRepository(session).save_item_outcome(item.id, state=ItemState.FAILED, text=None, error=error,
                                             provenance=provenance, checks=_check_columns(checks))


@dataclass(frozen=True)
class ItemOutcome:
    """One item's result: ``text`` when it succeeded, else ``error``."""

    item: Item
    text: str | None
    error: str | None
    provenance: dict[str, Any] | None
    checks: CheckOutcome | None = None


def record_outcomes(session: Session, outcomes: Sequence[ItemOutcome]) -> None:
    """A chunk's outcomes in one statement: what ``record_success`` and ``record_failure`` record, item by
    item, with one round trip (saving them one by one was a third of a no-op chunk's time)."""
    rows = []
    for o in outcomes:
        marked = marking.mark(o.provenance or {}, o.text) if o.text is not None else o.provenance
        rows.append({"b_id": o.item.id, "b_state": ItemState.SUCCEEDED if o.text is not None else ItemState.FAILED,
                     "b_text": o.text, "b_error": None if o.text is not None else (o.error or "generation failed"),
                     "b_provenance": marked, "b_content_sha256": marked["content_sha256"] if o.text is not None
                     and marked is not None else None,
                     "b_check_status": o.checks.status if o.checks else None,
                     "b_failed_checks": o.checks.failed_checks if o.checks else None,
                     "b_fields": o.checks.fields if o.checks else None})
    JobRepository(session).save_item_outcomes(rows)


def _check_columns(checks: CheckOutcome | None) -> dict[str, Any]:
    if checks is None:
        return {}
    return {"check_status": checks.status, "failed_checks": checks.failed_checks, "fields": checks.fields}


def close(session: Session, chunk: Chunk, owner: str, storage_key: str | None) -> bool:
    """Mark the chunk succeeded if we still hold it; False if our lease was lost.

    On PostgreSQL the UPDATE also locks the chunk row until the commit, so nobody can
    take the chunk over between this check and the commit (the shard is written in between).
    """
    return JobRepository(session).finish_chunk(chunk.id, owner, ChunkState.SUCCEEDED, storage_key=storage_key)


def complete(session: Session, chunk: Chunk, owner: str, storage_key: str | None, *,
             on_closed: Callable[[], object] | None = None) -> tuple[bool, list[str]]:
    """Close the chunk; if it was the last one, ask for the job's finalization.

    ``on_closed`` runs once the chunk is closed and before finalization is asked (the worker writes
    the chunk's result shard there: only the lease holder gets that far). Returns (False, []) if our
    lease was lost, else (True, outbox ids to relay after commit).
    """
    if not close(session, chunk, owner, storage_key):
        return False, []
    if on_closed is not None:
        on_closed()
    return True, request_finalization(session, chunk.job_id)


def release(session: Session, chunk: Chunk, owner: str, error: str, *, refund_attempt: bool = False) -> bool:
    return JobRepository(session).release_chunk(chunk.id, owner, error, refund_attempt=refund_attempt)


def request_finalization(session: Session, job_id: str) -> list[str]:
    """Once no chunk is pending or running, move the job to finalizing and enqueue its finalize task.

    The job row is locked first, so two workers finishing the last two chunks at
    once serialise here and exactly one of them sees zero chunks left.
    """
    repo = JobRepository(session)
    job = repo.get_for_update(job_id)
    if job is None or job.status not in (JobStatus.QUEUED, JobStatus.RUNNING, JobStatus.CANCELLING):
        return []
    if repo.unfinished_chunk_count(job_id) > 0:
        return []
    if job.status != JobStatus.CANCELLING:
        repo.set_job_status(job_id, JobStatus.FINALIZING, None)
    repo.mark_finalize_requested(job_id, utcnow())
    return OutboxRepository(session).add_many(FINALIZE_JOB_TASK, job.queue, [[job_id]])


def job_to_finalize(session: Session, job_id: str) -> Job | None:
    job = JobRepository(session).get_for_update(job_id)
    if job is None or job.status not in (JobStatus.FINALIZING, JobStatus.CANCELLING) or job.finished_at:
        return None
    if JobRepository(session).unfinished_chunk_count(job_id) > 0:
        return None
    return job


def finish_job(session: Session, job_id: str, error: str | None = None) -> JobStatus | None:
    """The job's final status: cancelled if a cancel was asked, failed if nothing succeeded."""
    repo = JobRepository(session)
    job = repo.get_for_update(job_id)
    if job is None or job.finished_at is not None:
        return None
    if job.cancel_requested_at is not None:
        status = JobStatus.CANCELLED
    elif error is not None or repo.item_counts(job_id).get(ItemState.SUCCEEDED, 0) == 0:
        status = JobStatus.FAILED
    else:
        status = JobStatus.SUCCEEDED
    repo.set_job_status(job_id, status, utcnow(), error=error)
    return status


def item_counts(session: Session, job_id: str) -> dict[ItemState, int]:
    return JobRepository(session).item_counts(job_id)


def failed_items(session: Session, job_id: str) -> Iterator[Item]:
    """The job's error file, in submission order."""
    return JobRepository(session).iter_finished_items(job_id, states=(ItemState.FAILED,))


def chunk_items(session: Session, chunk_id: str) -> list[Item]:
    return JobRepository(session).chunk_items(chunk_id)


def fail_chunk(session: Session, chunk: Chunk, owner: str, reason: str) -> list[str]:
    """Give up on a chunk: its pending items go to errors with the reason, once."""
    repo = JobRepository(session)
    if not repo.finish_chunk(chunk.id, owner, ChunkState.FAILED, error=reason):
        return []
    for item in repo.pending_items(chunk.id):
        record_failure(session, item, reason)
    return request_finalization(session, chunk.job_id)


def write_provenance(session: Session, store: ObjectStore, job: Job, written: Mapping[str, bytes]) -> str:
    """The job's PROV-JSON document (factory/provenance/manifest.py), stored next to its results; returns its
    key. ``written``: the job files the finalize step just stored (key -> bytes); each chunk's result shard
    is read back, so every output entity carries the hash of what storage holds."""
    repo = JobRepository(session)
    chunks = repo.chunks_of(job.id)
    objects = {key: hashlib.sha256(data).hexdigest() for key, data in written.items()}
    for chunk in chunks:
        if chunk.storage_key and store.exists(chunk.storage_key):
            objects[chunk.storage_key] = hashlib.sha256(store.get_bytes(chunk.storage_key)).hexdigest()
    document = prov_manifest.build(job, chunks, repo.iter_items(job.id), objects)
    key = job_provenance_key(job.tenant_id, job.id)
    store.put_bytes(key, canonical_json(document).encode(), "application/json")
    return key
