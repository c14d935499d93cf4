"""The rules for jobs. Takes a session, never commits: the caller owns the transaction."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from sqlalchemy.orm import Session

from factory.db.models import Item, ItemState, Job, JobStatus
from factory.errors import Conflict, NotFound
from factory.jobs import execution
from factory.jobs.repository import JobRepository
from factory.jobs.schemas import ItemCounts, JobOut
from factory.provenance.hashing import canonical_json
from factory.storage.base import ObjectStore
from factory.storage.keys import job_provenance_key


@dataclass(frozen=True)
class CreatedJob:
    job: Job
    outbox_ids: list[str]


def provenance_document(session: Session, store: ObjectStore, tenant_id: str, job_id: str) -> bytes:
    """The job's PROV-JSON document (written when it ends); 409 while it runs."""
    job = get_job(session, tenant_id, job_id)
    key = job_provenance_key(job.tenant_id, job.id)
    if job.finished_at is None or not store.exists(key):
        raise Conflict("a job's provenance is written when it ends; this one has not ended", field="job_id")
    return store.get_bytes(key)


def get_job(session: Session, tenant_id: str, job_id: str) -> Job:
    job = JobRepository(session).get(tenant_id, job_id)
    if job is None:
        raise NotFound("no such job", field="job_id")
    return job


def describe(session: Session, job: Job) -> JobOut:
    counts = JobRepository(session).item_counts(job.id)
    return JobOut(
        id=job.id, kind=job.kind, status=job.status.value, model=job.model, variants=job.variants,
        seed=job.seed, params=job.params, template_sha256=job.template_sha256,
        counts=ItemCounts(
            total=job.item_count,
            pending=counts.get(ItemState.PENDING, 0),
            succeeded=counts.get(ItemState.SUCCEEDED, 0),
            failed=counts.get(ItemState.FAILED, 0),
            cancelled=counts.get(ItemState.CANCELLED, 0),
        ),
        chunk_count=job.chunk_count, created_at=job.created_at, started_at=job.started_at,
        finished_at=job.finished_at, results_url=f"/v1/jobs/{job.id}/results",
    )


def cancel_job(session: Session, tenant_id: str, job_id: str) -> tuple[Job, list[str]]:
    """Stop what has not started; running chunks finish and keep their results.

    Returns the job and the outbox ids to relay after commit (its finalize task,
    when nothing is left running).
    """
    repo = JobRepository(session)
    job = get_job(session, tenant_id, job_id)
    job = repo.get_for_update(job.id) or job
    if job.status in (JobStatus.CANCELLING, JobStatus.CANCELLED):
        return job, []
    if job.status.is_terminal or job.status == JobStatus.FINALIZING:
        raise Conflict(f"job is already {job.status.value}", field="job_id")
    repo.cancel_pending(job.id)
    repo.request_cancel(job.id)
    outbox_ids = execution.request_finalization(session, job.id)
    session.refresh(job)
    return job, outbox_ids


def result_line(item: Item, job: Job) -> dict[str, Any]:
    """One JSONL line: the text (or error) with its recipient key and provenance."""
    line = {
        "job_id": job.id,
        "item_id": item.id,
        "key": item.key,
        "variant": item.variant,
        "status": item.state.value,
        "text": item.text,
        "error": item.error,
        "provenance": item.provenance,
    }
    if item.check_status is not None:  # campaign copy: its fields and how its checks went
        line.update(fields=item.fields, check_status=item.check_status, failed_checks=item.failed_checks)
    return line


def write_result_shard(session: Session, store: ObjectStore, job: Job, chunk_id: str, key: str) -> None:
    """The chunk's JSONL shard: one ``result_line`` per item, under ``key`` (deterministic: a rerun
    overwrites it). Written by the lease holder between closing the chunk and the commit."""
    lines = (canonical_json(result_line(item, job)) + "\n" for item in JobRepository(session).chunk_items(chunk_id))
    store.put_bytes(key, "".join(lines).encode(), "application/x-ndjson")


def iter_results(session: Session, job: Job) -> Iterator[str]:
    for item in JobRepository(session).iter_finished_items(job.id):
        yield canonical_json(result_line(item, job)) + "\n"
