"""generate_chunk: the one task. Thin and idempotent.

1. claim the chunk under a lease (no-op if finished or held elsewhere);
2. generate its pending items in one batched call (a crash isolates the bad item);
3. write the chunk's JSONL shard to object storage (deterministic key: a rerun overwrites it);
4. commit the items and close the chunk (and the job, if it was the last chunk).

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
from celery.exceptions import SoftTimeLimitExceeded

from factory import __version__
from factory.config import get_settings
from factory.db.models import Item, Job
from factory.db.session import session_scope
from factory.jobs import execution
from factory.jobs.service import result_line
from factory.provenance.hashing import canonical_json
from factory.queue import GENERATE_CHUNK_TASK
from factory.storage import open_store
from factory.storage.keys import result_shard_key
from workers import runtime
from workers.celery_app import app
from workers.generators.base import GenerationRequest, GenerationResult, Generator

log = logging.getLogger(__name__)

Outcome = tuple[GenerationResult | None, str | None]  # (result, error)


def _requests(job: Job, items: list[Item]) -> list[GenerationRequest]:
    p = job.params
    return [
        GenerationRequest(
            prompt=item.prompt, seed=item.seed, system_prompt=job.system_prompt,
            max_new_tokens=p["max_new_tokens"], temperature=p["temperature"], top_p=p["top_p"],
            repetition_penalty=p["repetition_penalty"],
        )
        for item in items
    ]


def _generate_isolating(gen: Generator, reqs: list[GenerationRequest]) -> list[Outcome]:
    """One batched call; if it raises, retry each item alone so one bad item fails alone."""
    try:
        return [(r, None) for r in gen.generate(reqs)]
    except SoftTimeLimitExceeded:
        raise
    except Exception:
        log.warning("batched generation failed; isolating items one by one", exc_info=True)
    outcomes: list[Outcome] = []
    for req in reqs:
        try:
            outcomes.append((gen.generate([req])[0], None))
        except SoftTimeLimitExceeded:
            raise
        except Exception as exc:
            outcomes.append((None, f"generation failed: {type(exc).__name__}"))
    return outcomes


def _provenance(gen: Generator, job: Job, item: Item, res: GenerationResult | None, *,
                chunk_id: str, attempt: int, batch_size: int, generate_ms: float,
                queue_ms: float) -> dict[str, Any]:
    info = gen.info
    prov: dict[str, Any] = {
        "model": job.model, "weights_sha256": info.weights_sha256, "generator": info.name,
        "factory_version": __version__, "libraries": info.libraries,
        "template_sha256": job.template_sha256, "prompt_sha256": item.prompt_sha256,
        "params": job.params, "seed": item.seed, "job_seed": job.seed,
        "worker_host": socket.gethostname(), "worker_pid": os.getpid(),
        "device": info.device, "dtype": info.dtype,
        "chunk_id": chunk_id, "attempt": attempt, "batch_size": batch_size,
        "timings_ms": {"queue": round(queue_ms, 1), "generate": round(generate_ms, 1)},
    }
    if res is not None:
        prov.update(prompt_tokens=res.prompt_tokens, completion_tokens=res.completion_tokens,
                    finish_reason=res.finish_reason)
    return prov


@app.task(name=GENERATE_CHUNK_TASK, bind=True, acks_late=True, reject_on_worker_lost=True,
          max_retries=None)
def generate_chunk(self: Task, chunk_id: str) -> str:
    settings = get_settings()
    owner = f"{socket.gethostname()}:{os.getpid()}:{self.request.id}"
    with session_scope(settings.database_url) as session:
        claimed = execution.claim(session, chunk_id, owner, settings.chunk_lease_s)
    if claimed is None:
        return "skipped"
    chunk, job, items = claimed.chunk, claimed.job, claimed.items
    queue_ms = (time.time() - chunk.created_at.timestamp()) * 1000
    try:
        gen = runtime.get_generator(settings, job.model)
        started = time.perf_counter()
        outcomes = _generate_isolating(gen, _requests(job, items)) if items else []
        generate_ms = (time.perf_counter() - started) * 1000
    except BaseException as exc:
        _give_back(self, settings, chunk, owner, exc)
        raise

    provs = {
        item.id: _provenance(gen, job, item, res, chunk_id=chunk.id, attempt=chunk.attempts,
                             batch_size=len(items), generate_ms=generate_ms, queue_ms=queue_ms)
        for item, (res, _err) in zip(items, outcomes, strict=True)
    }
    with session_scope(settings.database_url) as session:
        for item, (res, err) in zip(items, outcomes, strict=True):
            if res is not None:
                execution.record_success(session, item, res.text, provs[item.id])
            else:
                execution.record_failure(session, item, err or "generation failed", provs[item.id])
        session.flush()
        # The shard holds every item of the chunk in its final state; written before
        # the commit, so a committed chunk always has its shard.
        final_items = execution.chunk_items(session, chunk.id)
        shard = "".join(canonical_json(result_line(i, job)) + "\n" for i in final_items)
        key = result_shard_key(job.tenant_id, job.id, chunk.seq)
        open_store(settings).put_bytes(key, shard.encode(), "application/x-ndjson")
        if not execution.complete(session, chunk, owner, key):
            session.rollback()  # our lease ran out and another worker owns the chunk now
            return "lease-lost"
    return "done"


def _give_back(task: Task, settings: Any, chunk: Any, owner: str, exc: BaseException) -> None:
    """Release the chunk for a retry, or fail its items once attempts are used up."""
    reason = f"{type(exc).__name__}"
    with session_scope(settings.database_url) as session:
        if chunk.attempts >= settings.chunk_max_attempts:
            execution.fail_chunk(session, chunk, owner, f"gave up after {chunk.attempts} attempts: {reason}")
            return
        execution.release(session, chunk, owner, reason)
    if not isinstance(exc, (KeyboardInterrupt, SystemExit)):
        raise task.retry(countdown=min(60, 2 ** chunk.attempts), exc=exc)
