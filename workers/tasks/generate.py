"""The tasks: generate_chunk and finalize_job. Thin and idempotent.

generate_chunk:
1. claim the chunk under a lease (no-op if finished or held elsewhere);
2. the job kind's handler generates the pending items (one batched call; a crash
   isolates the bad item);
3. write the chunk's JSONL shard to object storage (deterministic key: a rerun overwrites it);
4. commit the items and close the chunk; the last chunk moves the job to finalizing
   and enqueues finalize_job (through the outbox, relayed after the commit).

A crash anywhere before 4 leaves the chunk leased; it is retried when the lease
ends. Items only change from pending, so a second run can never add a result.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from typing import Any

from celery import Task

from factory.config import Settings, get_settings
from factory.db.models import Chunk
from factory.db.session import session_scope
from factory.jobs import execution
from factory.jobs.service import result_line
from factory.outbox import relay
from factory.provenance.hashing import canonical_json
from factory.queue import FINALIZE_JOB_TASK, GENERATE_CHUNK_TASK
from factory.storage import open_store
from factory.storage.keys import result_shard_key
from workers import runtime
from workers.celery_app import app
from workers.kinds import handler_for
from workers.kinds.base import RunContext

log = logging.getLogger(__name__)


def _relay(settings: Settings, outbox_ids: list[str]) -> None:
    if outbox_ids:
        with session_scope(settings.database_url) as session:
            relay.relay(session, settings, outbox_ids)


@app.task(name=GENERATE_CHUNK_TASK, bind=True, acks_late=True, reject_on_worker_lost=True, max_retries=None)
def generate_chunk(self: Task, chunk_id: str) -> str:
    settings = get_settings()
    owner = f"{socket.gethostname()}:{os.getpid()}:{self.request.id}"
    with session_scope(settings.database_url) as session:
        claimed = execution.claim(session, chunk_id, owner, settings.chunk_lease_s)
    if claimed is None:
        return "skipped"
    chunk, job, items = claimed.chunk, claimed.job, claimed.items
    ctx = RunContext(chunk_id=chunk.id, attempt=chunk.attempts,
                     queue_ms=(time.time() - chunk.created_at.timestamp()) * 1000)
    try:
        handler = handler_for(job.kind)
        gen = runtime.get_generator(settings, job.model)
        started = time.perf_counter()
        outcomes = handler.run(gen, job, items)
        generate_ms = (time.perf_counter() - started) * 1000
    except BaseException as exc:
        _give_back(self, settings, chunk, owner, exc)
        raise

    with session_scope(settings.database_url) as session:
        for item, outcome in zip(items, outcomes, strict=True):
            prov = handler.provenance(gen, job, item, outcome, ctx, len(items), generate_ms)
            if outcome.result is not None:
                execution.record_success(session, item, outcome.result.text, prov, outcome.checks)
            else:
                execution.record_failure(session, item, outcome.error or "generation failed", prov, outcome.checks)
        session.flush()
        # The shard holds every item of the chunk in its final state; written before
        # the commit, so a committed chunk always has its shard.
        shard = "".join(canonical_json(result_line(i, job)) + "\n" for i in execution.chunk_items(session, chunk.id))
        key = result_shard_key(job.tenant_id, job.id, chunk.seq)
        open_store(settings).put_bytes(key, shard.encode(), "application/x-ndjson")
        done, outbox_ids = execution.complete(session, chunk, owner, key)
        if not done:
            session.rollback()  # our lease ran out and another worker owns the chunk now
            return "lease-lost"
    _relay(settings, outbox_ids)
    return "done"


def _give_back(task: Task, settings: Settings, chunk: Chunk, owner: str, exc: BaseException) -> None:
    """Release the chunk for a retry, or fail its items once attempts are used up."""
    reason = type(exc).__name__
    with session_scope(settings.database_url) as session:
        if chunk.attempts >= settings.chunk_max_attempts:
            outbox_ids = execution.fail_chunk(session, chunk, owner,
                                              f"gave up after {chunk.attempts} attempts: {reason}")
        else:
            execution.release(session, chunk, owner, reason)
            outbox_ids = None
    if outbox_ids is not None:
        _relay(settings, outbox_ids)
        return
    if isinstance(exc, Exception):
        raise task.retry(countdown=min(60, 2 ** chunk.attempts), exc=exc)


@app.task(name=FINALIZE_JOB_TASK, bind=True, acks_late=True, reject_on_worker_lost=True, max_retries=5)
def finalize_job(self: Task, job_id: str) -> str:
    """Run the kind's job-level step (exports, filters, manifest), then set the final status."""
    settings = get_settings()
    with session_scope(settings.database_url) as session:
        job = execution.job_to_finalize(session, job_id)
        if job is None:
            return "skipped"
        try:
            handler_for(job.kind).finalize(session, job, open_store(settings))
        except Exception as exc:
            if self.request.retries < (self.max_retries or 0):
                raise self.retry(countdown=2 ** self.request.retries, exc=exc) from exc
            log.exception("finalizing job %s failed", job_id)
            session.rollback()
            execution.finish_job(session, job_id, error=f"finalization failed: {type(exc).__name__}")
            return "failed"
        status: Any = execution.finish_job(session, job_id)
    return f"finished:{status}"
