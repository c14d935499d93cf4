"""The tasks: generate_chunk and finalize_job. Thin and idempotent.

generate_chunk:
1. claim the chunk under a lease (no-op if finished, held elsewhere or out of
   attempts), writing its items in the same transaction if they were deferred (a
   batch file's chunk names its lines of the input file, read outside the claim's
   transaction: the claim asks for them, is rolled back, and is made again; a read
   slow enough to eat into generation's time budget re-queues the task unclaimed);
   a background thread renews the lease while the task runs;
2. the job kind's handler generates the pending items (one batched call; a crash
   isolates the bad item, an out-of-memory error splits the batch);
3. in one transaction: record the items, close the chunk (only if we still hold
   it), write its JSONL shard to object storage (deterministic key: a rerun
   overwrites it), ask for the job's finalization if it was the last chunk, commit;
4. relay the finalize message after the commit.

A crash anywhere before the commit leaves the chunk leased; once the lease runs
out the reconciler hands it to another worker. Items only change from pending,
so a second run can never add a result. The database or storage being away
during 1 or 3 delays the chunk (retries with backoff) without using up an attempt.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Callable
from typing import Any

from celery import Task
from celery.exceptions import SoftTimeLimitExceeded
from sqlalchemy.orm import Session

from factory.config import Settings, get_settings
from factory.db.models import Chunk, Job
from factory.db.session import session_scope
from factory.jobs import execution
from factory.jobs.service import result_line
from factory.logs import describe_exception
from factory.outbox import relay
from factory.provenance.hashing import canonical_json
from factory.queue import FINALIZE_JOB_TASK, GENERATE_CHUNK_TASK
from factory.reliability.transient import is_transient, retry_delay
from factory.storage import open_store
from factory.storage.keys import result_shard_key
from workers import runtime
from workers.celery_app import app
from workers.kinds import handler_for
from workers.kinds.base import Outcome, RunContext
from workers.lease import LeaseKeeper

log = logging.getLogger(__name__)

# Keep this much of the soft time limit for handing the chunk back after saving failed.
SAVE_MARGIN_S = 1.0
# A deferred chunk's source read may use this share of the soft time limit; a slower read (storage
# waking from an outage) re-queues the task unclaimed, so generation starts with its whole budget.
SOURCE_READ_SHARE = 0.25
SLOW_SOURCE_RETRIES = 5  # after that many retries the chunk is claimed however slow its read was
FINALIZE_MAX_RETRIES = 5


def _relay(settings: Settings, outbox_ids: list[str]) -> None:
    """Publish what the commit asked for; anything not sent is re-sent by the reconciler."""
    if not outbox_ids:
        return
    try:
        with session_scope(settings.database_url) as session:
            relay.relay(session, settings, outbox_ids)
    except Exception as exc:
        log.warning("could not relay outbox messages now (%s); the reconciler will", type(exc).__name__)


class ChunkFailed(Exception):
    """What Celery logs of a chunk's exception: its type. The message may quote a prompt, a record or a
    generated text; the type and frames are logged here (factory/logs.py)."""


class SlowSource(Exception):
    """The source read used too much of the time limit: retried unclaimed, with a fresh budget."""


@app.task(name=GENERATE_CHUNK_TASK, bind=True, acks_late=True, reject_on_worker_lost=True, max_retries=None)
def generate_chunk(self: Task, chunk_id: str) -> str:
    settings = get_settings()
    started = time.monotonic()
    owner = execution.lease_owner(self.request.id, socket.gethostname(), os.getpid())
    store = open_store(settings)
    source: bytes | None = None

    def write_items(session: Session, job: Job, chunk: Chunk) -> int:
        return handler_for(job.kind).write_items(session, settings, store, job, chunk, source)

    try:
        while True:
            try:
                with session_scope(settings.database_url) as session:
                    claimed = execution.claim(session, chunk_id, owner, settings.chunk_lease_s,
                                              max_attempts=settings.chunk_max_attempts, write_items=write_items)
                break
            except execution.SourceNeeded as need:
                # A chunk whose items are deferred (a batch file's lines): the claim was rolled back;
                # fetch the source outside any transaction, then claim again.
                if source is not None:
                    raise
                source = handler_for(need.deferred.kind).read_deferred(settings, store, need.deferred)
                if (time.monotonic() - started > settings.task_soft_time_limit_s * SOURCE_READ_SHARE
                        and self.request.retries < SLOW_SOURCE_RETRIES):
                    raise SlowSource(f"reading the chunk's source took {time.monotonic() - started:.1f}s") \
                        from None
    except execution.UnreadableChunk as exc:
        log.error("chunk %s: %s; it fails", chunk_id, exc)
        with session_scope(settings.database_url) as session:
            outbox_ids = execution.fail_unreadable(session, chunk_id, str(exc))
        _relay(settings, outbox_ids)
        return "failed"
    except Exception as exc:
        # A soft time limit here (a storage read hanging) also leaves nothing taken.
        if not (is_transient(exc) or isinstance(exc, SlowSource | SoftTimeLimitExceeded)):
            raise
        # Nothing was taken. Retrying re-publishes this message, so the wake-up survives.
        log.warning("could not claim chunk %s now (%s: database or storage away or slow); retrying",
                    chunk_id, type(exc).__name__)
        raise self.retry(countdown=retry_delay(self.request.retries), exc=exc) from exc
    if claimed is None:
        return "skipped"
    with LeaseKeeper(settings, chunk_id, owner) as lease:
        return _run_claimed(self, settings, claimed, owner, lease, started)


def _run_claimed(task: Task, settings: Settings, claimed: execution.ClaimedChunk, owner: str,
                 lease: LeaseKeeper, started: float) -> str:
    chunk, job, items = claimed.chunk, claimed.job, claimed.items
    ctx = RunContext(chunk_id=chunk.id, attempt=chunk.attempts,
                     queue_ms=(time.time() - chunk.created_at.timestamp()) * 1000)
    try:
        handler = handler_for(job.kind)
        gen = runtime.get_generator(settings, job.model)
        gen_started = time.perf_counter()
        outcomes = handler.run(gen, job, items)
        generate_ms = (time.perf_counter() - gen_started) * 1000
    except BaseException as exc:
        # An exception is the chunk's fault and uses up an attempt; the process being told
        # to stop (SystemExit, KeyboardInterrupt: a SIGTERM to every worker process) is not.
        _give_back(task, settings, chunk, owner, exc, infrastructure=not isinstance(exc, Exception))
        if isinstance(exc, Exception) and not isinstance(exc, SoftTimeLimitExceeded):
            log.warning("chunk %s failed: %s", chunk.id, describe_exception(exc))
            raise ChunkFailed(type(exc).__name__) from None
        raise
    if lease.lost.is_set():
        return "lease-lost"
    provenance = [handler.provenance(gen, job, item, outcome, ctx, len(items), generate_ms)
                  for item, outcome in zip(items, outcomes, strict=True)]
    deadline = started + settings.task_soft_time_limit_s - SAVE_MARGIN_S
    try:
        outbox_ids = _retry_transient(lambda: _save(settings, claimed, owner, outcomes, provenance), deadline)
    except BaseException as exc:
        # Saving is a bounded amount of work: running out of time there means the database
        # or the storage hung, which is no reason to use up one of the chunk's attempts.
        _give_back(task, settings, chunk, owner, exc,
                   infrastructure=is_transient(exc) or isinstance(exc, SoftTimeLimitExceeded))
        raise
    if outbox_ids is None:
        return "lease-lost"  # our lease ran out and another worker owns the chunk now
    _relay(settings, outbox_ids)
    return "done"


def _save(settings: Settings, claimed: execution.ClaimedChunk, owner: str, outcomes: list[Outcome],
          provenance: list[dict[str, Any]]) -> list[str] | None:
    """One transaction: items, chunk closed, shard written, finalization asked. None if the lease was lost.

    The shard is written after the chunk is closed (which checks and, on PostgreSQL,
    locks our lease) and before the commit: only the lease holder writes it, and a
    committed chunk always has its shard. A crash between the write and the commit
    leaves the chunk to be rerun, which regenerates the same texts (same seeds) under
    the same key.
    """
    chunk, job = claimed.chunk, claimed.job
    with session_scope(settings.database_url) as session:
        for item, outcome, prov in zip(claimed.items, outcomes, provenance, strict=True):
            if outcome.result is not None:
                execution.record_success(session, item, outcome.result.text, prov, outcome.checks)
            else:
                execution.record_failure(session, item, outcome.error or "generation failed", prov, outcome.checks)
        session.flush()
        key = result_shard_key(job.tenant_id, job.id, chunk.seq)
        if not execution.close(session, chunk, owner, key):
            session.rollback()
            return None
        shard = "".join(canonical_json(result_line(i, job)) + "\n" for i in execution.chunk_items(session, chunk.id))
        open_store(settings).put_bytes(key, shard.encode(), "application/x-ndjson")
        return execution.request_finalization(session, job.id)


def _retry_transient(step: Callable[[], list[str] | None], deadline: float) -> list[str] | None:
    """Run ``step``; while it fails for a transient reason, wait and run it again until ``deadline``."""
    attempt = 0
    while True:
        try:
            return step()
        except Exception as exc:
            delay = retry_delay(attempt, cap_s=5.0)
            if not is_transient(exc) or time.monotonic() + delay > deadline:
                raise
            log.warning("saving failed (%s); retrying in %.1fs", type(exc).__name__, delay)
            time.sleep(delay)
            attempt += 1


def _give_back(task: Task, settings: Settings, chunk: Chunk, owner: str, exc: BaseException, *,
               infrastructure: bool) -> None:
    """Release the chunk for a retry, or dead-letter it once its attempts are used up.

    ``infrastructure``: the failure was a service being away, not the chunk; the
    attempt is given back so an outage never dead-letters work.
    """
    reason = type(exc).__name__
    try:
        with session_scope(settings.database_url) as session:
            if not infrastructure and chunk.attempts >= settings.chunk_max_attempts:
                outbox_ids: list[str] | None = execution.fail_chunk(
                    session, chunk, owner, f"gave up after {chunk.attempts} attempts: {reason}")
                released = False
            else:
                released = execution.release(session, chunk, owner, reason, refund_attempt=infrastructure)
                outbox_ids = None
    except Exception as db_exc:
        log.warning("could not hand chunk %s back (%s); the reconciler will once its lease expires",
                    chunk.id, type(db_exc).__name__)
        return
    if outbox_ids is not None:
        _relay(settings, outbox_ids)
        return
    if released and isinstance(exc, Exception):
        raise task.retry(countdown=retry_delay(chunk.attempts), exc=ChunkFailed(reason))


@app.task(name=FINALIZE_JOB_TASK, bind=True, acks_late=True, reject_on_worker_lost=True, max_retries=None)
def finalize_job(self: Task, job_id: str) -> str:
    """Run the kind's job-level step (exports, filters, error file, manifest), then set the final status.

    Services being away are waited out (retried with backoff, without limit); the
    kind's step failing for another reason is retried a few times, then the job fails.
    """
    settings = get_settings()
    try:
        with session_scope(settings.database_url) as session:
            job = execution.job_to_finalize(session, job_id)
            if job is None:
                return "skipped"
            outbox_ids = handler_for(job.kind).finalize(session, job, open_store(settings))
            status: Any = execution.finish_job(session, job_id)
    except Exception as exc:
        if is_transient(exc) or self.request.retries < FINALIZE_MAX_RETRIES:
            raise self.retry(countdown=retry_delay(self.request.retries), exc=exc) from exc
        log.error("finalizing job %s failed: %s", job_id, describe_exception(exc))
        with session_scope(settings.database_url) as session:
            execution.finish_job(session, job_id, error=f"finalization failed: {type(exc).__name__}")
        return "failed"
    _relay(settings, outbox_ids)  # after the final status is committed
    return f"finished:{status}"
