"""Running one chunk, start to end: the function the ``generate_chunk`` task calls and the tests call.

1. claim the chunk under a lease (no-op if finished, held elsewhere or out of
   attempts), writing its items in the same transaction if they were deferred (a
   batch file's chunk names its lines of the input file, read outside the claim's
   transaction: the claim asks for them, is rolled back, and is made again; a read
   slow enough to eat into generation's time budget re-queues the task unclaimed);
   a background thread renews the lease while the chunk runs;
2. the job kind's handler generates the pending items (one batched call; a crash
   isolates the bad item, an out-of-memory error splits the batch);
3. in one transaction: record the items, close the chunk (only if we still hold
   it), write its JSONL shard to object storage (deterministic key: a rerun
   overwrites it), ask for the job's finalization if it was the last chunk, commit
   (``execution.complete``);
4. relay the finalize message after the commit.

A crash anywhere before the commit leaves the chunk leased; once the lease runs
out the reconciler hands it to another worker. Items only change from pending,
so a second run can never add a result. The database or storage being away
during 1 or 3 delays the chunk (a retry with backoff) without using up an attempt.

The result is a ``ChunkOutcome``; the task maps it to Celery (workers/tasks/generate.py).
A process told to stop (SystemExit, KeyboardInterrupt) gives the chunk back and re-raises.
"""

from __future__ import annotations

import enum
import logging
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from celery.exceptions import SoftTimeLimitExceeded
from sqlalchemy.orm import Session

from factory.config import Settings
from factory.db.models import Chunk, Job
from factory.db.session import session_scope
from factory.jobs import execution
from factory.jobs import service as jobs_service
from factory.logs import describe_exception
from factory.outbox import relay
from factory.reliability.transient import is_transient, retry_delay
from factory.storage import open_store
from factory.storage.keys import result_shard_key
from workers import runtime
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


class Result(enum.StrEnum):
    DONE = "done"  # generated, recorded and closed
    SKIPPED = "skipped"  # finished, cancelled, held by another worker or out of attempts: nothing to do
    LEASE_LOST = "lease-lost"  # our lease ran out while we worked; another worker owns the chunk
    FAILED = "failed"  # the chunk failed (its items carry the reason); ``error``, if set, is raised to Celery
    RETRY = "retry"  # run the task again in ``retry_after_s`` (``error`` is why)


@dataclass(frozen=True)
class ChunkOutcome:
    result: Result
    retry_after_s: float | None = None
    error: BaseException | None = None


class ChunkFailed(Exception):
    """What Celery logs of a chunk's exception: its type. The message may quote a prompt, a record or a
    generated text; the type and frames are logged here (factory/logs.py)."""


class SlowSource(Exception):
    """The source read used too much of the time limit: retried unclaimed, with a fresh budget."""


def relay_after_commit(settings: Settings, outbox_ids: list[str]) -> None:
    """Publish what the commit asked for; anything not sent is re-sent by the reconciler."""
    if not outbox_ids:
        return
    try:
        with session_scope(settings.database_url) as session:
            relay.relay(session, settings, outbox_ids)
    except Exception as exc:
        log.warning("could not relay outbox messages now (%s); the reconciler will", type(exc).__name__)


def run_chunk(settings: Settings, chunk_id: str, *, message_id: str, retries: int = 0) -> ChunkOutcome:
    """Claim, generate, record and close one chunk. ``message_id``: the task's (part of the lease owner);
    ``retries``: how many times this message was retried already."""
    started = time.monotonic()
    owner = execution.lease_owner(message_id, socket.gethostname(), os.getpid())
    try:
        claimed = _claim(settings, chunk_id, owner, started, retries)
    except execution.UnreadableChunk as exc:
        log.error("chunk %s: %s; it fails", chunk_id, exc)
        with session_scope(settings.database_url) as session:
            outbox_ids = execution.fail_unreadable(session, chunk_id, str(exc))
        relay_after_commit(settings, outbox_ids)
        return ChunkOutcome(Result.FAILED)
    except Exception as exc:
        # A soft time limit here (a storage read hanging) also leaves nothing taken.
        if not (is_transient(exc) or isinstance(exc, SlowSource | SoftTimeLimitExceeded)):
            raise
        # Nothing was taken. Retrying re-publishes this message, so the wake-up survives.
        log.warning("could not claim chunk %s now (%s: database or storage away or slow); retrying",
                    chunk_id, type(exc).__name__)
        return ChunkOutcome(Result.RETRY, retry_delay(retries), exc)
    if claimed is None:
        return ChunkOutcome(Result.SKIPPED)
    with LeaseKeeper(settings, chunk_id, owner) as lease:
        return _run_claimed(settings, claimed, owner, lease, started)


def _claim(settings: Settings, chunk_id: str, owner: str, started: float,
           retries: int) -> execution.ClaimedChunk | None:
    store = open_store(settings)
    source: bytes | None = None

    def write_items(session: Session, job: Job, chunk: Chunk) -> int:
        return handler_for(job.kind).write_items(session, settings, store, job, chunk, source)

    while True:
        try:
            with session_scope(settings.database_url) as session:
                return execution.claim(session, chunk_id, owner, settings.chunk_lease_s,
                                       max_attempts=settings.chunk_max_attempts, write_items=write_items)
        except execution.SourceNeeded as need:
            # A chunk whose items are deferred (a batch file's lines): the claim was rolled back;
            # fetch the source outside any transaction, then claim again.
            if source is not None:
                raise
            source = handler_for(need.deferred.kind).read_deferred(settings, store, need.deferred)
            elapsed = time.monotonic() - started
            if elapsed > settings.task_soft_time_limit_s * SOURCE_READ_SHARE and retries < SLOW_SOURCE_RETRIES:
                raise SlowSource(f"reading the chunk's source took {elapsed:.1f}s") from None


def _run_claimed(settings: Settings, claimed: execution.ClaimedChunk, owner: str, lease: LeaseKeeper,
                 started: float) -> ChunkOutcome:
    chunk, job, items = claimed.chunk, claimed.job, claimed.items
    ctx = RunContext(chunk_id=chunk.id, attempt=chunk.attempts,
                     queue_ms=(time.time() - chunk.created_at.timestamp()) * 1000)
    try:
        handler = handler_for(job.kind)
        gen = runtime.get_generator(settings, job.model)
        gen_started = time.perf_counter()
        outcomes = handler.run(gen, job, items)
        generate_ms = (time.perf_counter() - gen_started) * 1000
    except Exception as exc:
        # An exception is the chunk's fault and uses up an attempt.
        if not isinstance(exc, SoftTimeLimitExceeded):
            log.warning("chunk %s failed: %s", chunk.id, describe_exception(exc))
        raised = exc if isinstance(exc, SoftTimeLimitExceeded) else ChunkFailed(type(exc).__name__)
        return _give_back(settings, chunk, owner, exc, infrastructure=False, raised=raised)
    except BaseException as exc:
        # The process being told to stop (a SIGTERM to every worker process) is not the chunk's fault.
        _give_back(settings, chunk, owner, exc, infrastructure=True)
        raise
    if lease.lost.is_set():
        return ChunkOutcome(Result.LEASE_LOST)
    provenance = [handler.provenance(gen, job, item, outcome, ctx, len(items), generate_ms)
                  for item, outcome in zip(items, outcomes, strict=True)]
    deadline = started + settings.task_soft_time_limit_s - SAVE_MARGIN_S
    try:
        saved = _retry_transient(lambda: _save(settings, claimed, owner, outcomes, provenance), deadline)
    except Exception as exc:
        # Saving is a bounded amount of work: running out of time there means the database
        # or the storage hung, which is no reason to use up one of the chunk's attempts.
        return _give_back(settings, chunk, owner, exc,
                          infrastructure=is_transient(exc) or isinstance(exc, SoftTimeLimitExceeded))
    except BaseException as exc:
        _give_back(settings, chunk, owner, exc, infrastructure=True)
        raise
    if saved is None:
        return ChunkOutcome(Result.LEASE_LOST)  # our lease ran out and another worker owns the chunk now
    relay_after_commit(settings, saved)
    return ChunkOutcome(Result.DONE)


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
        execution.record_outcomes(session, [
            execution.ItemOutcome(item, outcome.result.text if outcome.result is not None else None,
                                  outcome.error, prov, outcome.checks)
            for item, outcome, prov in zip(claimed.items, outcomes, provenance, strict=True)])
        key = result_shard_key(job.tenant_id, job.id, chunk.seq)
        closed, outbox_ids = execution.complete(
            session, chunk, owner, key,
            on_closed=lambda: jobs_service.write_result_shard(session, open_store(settings), job, chunk.id, key))
        if not closed:
            session.rollback()
            return None
        return outbox_ids


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


def _give_back(settings: Settings, chunk: Chunk, owner: str, exc: BaseException, *,
               infrastructure: bool, raised: BaseException | None = None) -> ChunkOutcome:
    """Release the chunk for a retry, or dead-letter it once its attempts are used up.

    ``infrastructure``: the failure was a service being away (or the process stopping), not
    the chunk; the attempt is given back so an outage never dead-letters work. ``raised``:
    what Celery is told when the chunk fails (default ``exc``); a retry names the exception type.
    """
    reason = type(exc).__name__
    raised = exc if raised is None else raised
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
        return ChunkOutcome(Result.FAILED, error=raised)
    if outbox_ids is not None:
        relay_after_commit(settings, outbox_ids)
        return ChunkOutcome(Result.FAILED, error=raised)
    if released:
        return ChunkOutcome(Result.RETRY, retry_delay(chunk.attempts), ChunkFailed(reason))
    return ChunkOutcome(Result.FAILED, error=raised)
