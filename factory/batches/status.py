"""What a batch looks like now: its OpenAI status, line and item counts, and the lines rendered so far.

Read by the API (``GET /v1/batches/...``, partial output), the finalize step and the webhook.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime

from sqlalchemy.orm import Session

from factory.augmentation.repository import AugmentationRepository
from factory.batches import lines as batch_lines
from factory.batches.output import Tally, group_lines, render_line
from factory.batches.repository import BatchRepository
from factory.batches.schemas import BatchError, BatchErrors, BatchOut, BatchUsage, Progress, RequestCounts
from factory.db.base import utcnow
from factory.db.models import Batch, ChunkState, ItemState, Job, JobStatus
from factory.jobs.repository import JobRepository


def _ts(value: datetime | None) -> int | None:
    return int(value.timestamp()) if value is not None else None


def job_of(session: Session, batch: Batch) -> Job | None:
    return session.get(Job, batch.job_id) if batch.job_id else None


def batch_status(batch: Batch, job: Job | None) -> str:
    if batch.failed_at is not None:
        return "failed"
    if job is None:
        return "validating"
    expiring = batch.expire_requested_at is not None
    return {
        JobStatus.QUEUED: "in_progress",
        JobStatus.RUNNING: "in_progress",
        JobStatus.FINALIZING: "finalizing",
        JobStatus.SUCCEEDED: "failed" if job.error else "completed",
        JobStatus.FAILED: "failed" if job.error else "completed",
        JobStatus.CANCELLING: "finalizing" if expiring else "cancelling",
        JobStatus.CANCELLED: "expired" if expiring else "cancelled",
    }[job.status]


def _counts(session: Session, batch: Batch, job: Job | None) -> tuple[RequestCounts, Progress | None]:
    """Lines and items finished so far. Items not written yet are pending, except those of chunks that
    ended unclaimed (cancelled, expired): their lines count as failed until finalization writes them."""
    if job is None:
        return RequestCounts(total=batch.line_count, completed=0, failed=0), None
    repo = JobRepository(session)
    by_state = repo.item_counts(job.id)
    ended_lines = ended_items = 0
    for lines in repo.unwritten_lines(job.id, (ChunkState.CANCELLED, ChunkState.FAILED)):
        ended_lines += lines["lines"]
        ended_items += lines["items"]
    if job.item_count == batch.line_count:  # one item per line: item counts are line counts
        completed = by_state.get(ItemState.SUCCEEDED, 0)
        failed = by_state.get(ItemState.FAILED, 0) + by_state.get(ItemState.CANCELLED, 0) + ended_lines
    else:
        completed, failed = BatchRepository(session).line_counts(job.id)
        failed += ended_lines
    done = sum(by_state.values()) - by_state.get(ItemState.PENDING, 0) + ended_items
    pending = job.item_count - done
    started = batch.in_progress_at or batch.created_at
    elapsed = ((job.finished_at or utcnow()) - started).total_seconds()
    rate = done / elapsed if elapsed > 0 and done else None
    eta = 0.0 if pending == 0 else (round(pending / rate, 1) if rate else None)
    progress = Progress(items_total=job.item_count, items_done=done,
                        items_per_second=round(rate, 3) if rate else None, eta_seconds=eta)
    return RequestCounts(total=batch.line_count, completed=completed, failed=failed), progress


def describe(session: Session, batch: Batch) -> BatchOut:
    fresh = BatchRepository(session).get_with_job(batch.id)
    assert fresh is not None
    batch, job = fresh
    status = batch_status(batch, job)
    counts, progress = _counts(session, batch, job)
    errors = batch.errors
    if job is not None and job.error and status == "failed":
        errors = [{"code": "finalization_failed", "message": job.error, "param": None, "line": None}]
    finalizing_at = batch.finalizing_at
    if finalizing_at is None and status == "finalizing" and job is not None:
        finalizing_at = BatchRepository(session).last_chunk_finished_at(job.id)
    ended = job.finished_at if job is not None else None
    expiring = batch.expire_requested_at is not None
    return BatchOut(
        id=batch.id, endpoint=batch.endpoint, model=batch.model,
        errors=BatchErrors(data=[BatchError(**e) for e in errors]) if errors else None,
        input_file_id=batch.input_file_id, completion_window=batch.completion_window, status=status,
        output_file_id=batch.output_file_id, error_file_id=batch.error_file_id,
        created_at=int(batch.created_at.timestamp()), in_progress_at=_ts(batch.in_progress_at),
        expires_at=_ts(batch.expires_at), finalizing_at=_ts(finalizing_at),
        completed_at=_ts(ended) if status == "completed" else None,
        failed_at=_ts(batch.failed_at or (ended if status == "failed" else None)),
        expired_at=_ts(batch.expired_at or (ended if status == "expired" else None)),
        cancelling_at=_ts(job.cancel_requested_at) if job is not None and not expiring else None,
        cancelled_at=_ts(ended) if status == "cancelled" else None,
        request_counts=counts, metadata=batch.metadata_,
        usage=BatchUsage(**batch.usage) if batch.usage else None, progress=progress,
    )


def render_lines(session: Session, job: Job, *, expired: bool,
                  tally: Tally | None = None) -> Iterator[tuple[str, str]]:
    """Every line that can be rendered now, in file order; augment lines with their stored verdicts."""
    verdicts = AugmentationRepository(session)
    for group in group_lines(BatchRepository(session).iter_items(job.id)):
        found = None
        if group[0].record.get("url") == batch_lines.AUGMENT and all(i.state == ItemState.SUCCEEDED for i in group):
            found = verdicts.verdicts_for([i.id for i in group])
        rendered = render_line(group, job.model, expired=expired, tally=tally, verdicts=found)
        if rendered is not None:
            yield rendered
