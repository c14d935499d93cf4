"""The rules for batches. Takes a session, never commits: the caller owns the transaction.

A batch is validated synchronously in ``POST /v1/batches``: the input file is read
from object storage as a stream, line by line, and every valid line is written as
items of ONE job (kind "batch", one model, that model's queue) as it is read. A file
with any bad line raises ``BatchValidationFailed`` after the whole file was checked
(up to ``FACTORY_BATCH_MAX_REPORTED_ERRORS`` errors); the caller rolls the items back
and records the batch as ``failed`` with ``errors.data`` naming the lines: nothing is
enqueued and no item row is left.

Status: the batch row keeps what the job does not know; the OpenAI status is derived
from both (``batch_status``):

    job queued/running   -> in_progress         job finalizing -> finalizing
    job succeeded/failed -> completed (failed if finalization broke)
    job cancelling       -> cancelling (finalizing when the window passed)
    job cancelled        -> cancelled, or expired when the window passed
    no job               -> failed (validation)
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.orm import Session

from factory.batches import lines as batch_lines
from factory.batches.chunks import INPUT_KEY, ChunkPlanner, clean_line
from factory.batches.lines import LineContext, LineError
from factory.batches.repository import BatchRepository
from factory.batches.schemas import BatchCreate, BatchList
from factory.batches.status import batch_status, describe, job_of, render_lines
from factory.batches.webhooks import DELIVER_BATCH_WEBHOOK_TASK
from factory.chat.schemas import DEFAULT_MAX_TOKENS
from factory.config import Settings
from factory.db.base import new_id, utcnow
from factory.db.models import Batch, JobStatus, StoredFile
from factory.errors import Conflict, InvalidInput, NotFound
from factory.files import service as files_service
from factory.jobs import service as jobs_service
from factory.jobs.writer import JobWriter
from factory.outbox.repository import OutboxRepository, Pending
from factory.storage import ObjectStore
from factory.webhooks.delivery import check_url as check_webhook_url

KIND = "batch"
WINDOWS = {"24h": 24 * 3600}
DEFAULT_PARAMS = {"max_new_tokens": DEFAULT_MAX_TOKENS, "temperature": 1.0, "top_p": 1.0, "repetition_penalty": 1.1}


class BatchValidationFailed(Exception):
    """The input file has bad lines; the caller rolls back and records the failed batch."""

    def __init__(self, errors: list[dict[str, Any]], line_count: int) -> None:
        super().__init__(f"{len(errors)} invalid line(s)")
        self.errors = errors
        self.line_count = line_count


@dataclass(frozen=True)
class CreatedBatch:
    batch: Batch
    outbox_ids: list[str]
    # The chunk messages, to publish after commit without reading them back (empty for a failed batch).
    messages: list[Pending] = field(default_factory=list)


# --- creating -------------------------------------------------------------------
def check_request(session: Session, settings: Settings, tenant_id: str, body: BatchCreate) -> StoredFile:
    """Everything about the request itself (not the file's lines): a 4xx before anything is written."""
    if body.endpoint not in batch_lines.SUPPORTED_URLS:
        raise InvalidInput("endpoint must be one of " + ", ".join(batch_lines.SUPPORTED_URLS), field="endpoint")
    if body.completion_window not in WINDOWS:
        raise InvalidInput("completion_window must be '24h'", field="completion_window")
    if body.webhook_url is not None:
        check_webhook_url(body.webhook_url, settings)
    try:
        source = files_service.get_file(session, tenant_id, body.input_file_id)
    except NotFound:
        raise NotFound("no such file", field="input_file_id") from None
    if source.purpose != "batch":
        raise InvalidInput("input_file_id must name a file uploaded with purpose 'batch'", field="input_file_id")
    return source


def _new_batch(settings: Settings, tenant_id: str, body: BatchCreate) -> Batch:
    now = utcnow()
    window = settings.batch_window_override_s or WINDOWS[body.completion_window]
    return Batch(id=new_id("batch"), tenant_id=tenant_id, endpoint=body.endpoint,
                 completion_window=body.completion_window, input_file_id=body.input_file_id,
                 metadata_=body.metadata, webhook_url=body.webhook_url, created_at=now,
                 expires_at=now + timedelta(seconds=window), webhook_attempts=0, line_count=0)


def create_batch(session: Session, settings: Settings, store: ObjectStore, tenant_id: str,
                 body: BatchCreate) -> CreatedBatch:
    """Validate the file line by line and write its chunks; raise BatchValidationFailed if any line is bad.

    Items are not written here (but for lines with more items than a chunk holds): each
    chunk names its range of the stored file and the worker that claims it writes its
    items (factory/batches/chunks.py), so a 50,000-line file costs 6,250 chunk rows,
    not 50,000 item rows, inside this request.
    """
    source = check_request(session, settings, tenant_id, body)
    batch = _new_batch(settings, tenant_id, body)
    ctx = LineContext(settings=settings, batch_seed=secrets.randbelow(2**31))
    errors: list[dict[str, Any]] = []
    writer = JobWriter(session, settings, tenant_id=tenant_id, kind=KIND, model=settings.model,
                       queue=settings.queue_for_model(settings.model), params=dict(DEFAULT_PARAMS),
                       seed=ctx.batch_seed, options={"batch_id": batch.id, INPUT_KEY: source.storage_key})
    line_count = _read_lines(settings, store, source, ctx, writer, errors)
    if errors:
        raise BatchValidationFailed(errors, line_count)
    model = ctx.model or settings.model
    writer.job.model, writer.job.queue = model, settings.queue_for_model(model)
    outbox_ids = writer.finish()
    batch.job_id, batch.model, batch.line_count, batch.in_progress_at = writer.job.id, model, line_count, utcnow()
    BatchRepository(session).add(batch)
    return CreatedBatch(batch=batch, outbox_ids=outbox_ids, messages=writer.messages)


def _read_lines(settings: Settings, store: ObjectStore, source: StoredFile, ctx: LineContext, writer: JobWriter,
                errors: list[dict[str, Any]]) -> int:
    """Stream the file: validate each line, plan its chunks while the file is clean; return the line count."""
    seen: set[str] = set()
    line_count = 0
    max_lines, max_line_bytes, max_items = settings.batch_max_lines, settings.batch_max_line_bytes, \
        settings.batch_max_items
    planner = ChunkPlanner(settings.chunk_size)
    for line_no, offset, raw in files_service.iter_lines_at(store, source, max_line_bytes):
        end = offset + len(raw) + 1
        text = clean_line(line_no, raw)
        if text is None:
            continue
        line_count += 1
        try:
            if line_count > max_lines:
                raise LineError("too_many_requests", f"a batch holds at most {max_lines} lines")
            if len(text) > max_line_bytes:
                raise LineError("line_too_long", f"a line holds at most {max_line_bytes} bytes")
            line = batch_lines.parse_line(text, ctx.json_limits)
            custom_id = line["custom_id"]
            if custom_id in seen:
                raise LineError("duplicate_custom_id", "custom_id repeats an earlier line's; each must be unique",
                                "custom_id")
            seen.add(custom_id)
            items, specs = batch_lines.chat_items(ctx, line), None
            if items is None or not planner.defers(items):
                specs = batch_lines.expand(ctx, line_no, line)
                items = len(specs)
            if planner.count + items > max_items:
                raise LineError("too_many_requests", f"a batch expands to at most {max_items} items")
        except LineError as exc:
            errors.append(exc.as_error(line_no))
            if len(errors) >= settings.batch_max_reported_errors or exc.code == "too_many_requests":
                break
            continue
        if errors:
            continue  # the batch will fail: keep checking lines, stop writing chunks
        if planner.defers(items):
            for chunk in planner.add(line_no, offset, end, items):
                writer.add_deferred_chunk(chunk)
            continue
        assert specs is not None
        for chunk in planner.add_written(items):  # a line too big for one chunk: its items now
            writer.add_deferred_chunk(chunk)
        writer.end_chunk()
        for spec in specs:
            writer.add(key=spec.key, variant=spec.variant, record=spec.record, prompt=spec.prompt,
                       prompt_sha256=spec.prompt_sha256, request=spec.request, seed=spec.seed, error=spec.error,
                       record_json=spec.record_json, request_json=spec.request_json)
        writer.end_chunk()
    for chunk in planner.finish():
        writer.add_deferred_chunk(chunk)
    if line_count == 0 and not errors:
        errors.append({"code": "empty_file", "message": "the input file has no requests", "param": None,
                       "line": None})
    return line_count


def record_failed_batch(session: Session, settings: Settings, tenant_id: str, body: BatchCreate,
                        failed: BatchValidationFailed) -> CreatedBatch:
    """The batch as OpenAI reports a file that failed validation: status failed, errors.data per line."""
    batch = _new_batch(settings, tenant_id, body)
    batch.errors, batch.line_count, batch.failed_at = failed.errors, failed.line_count, utcnow()
    BatchRepository(session).add(batch)
    outbox_ids: list[str] = []
    if batch.webhook_url:
        outbox_ids = OutboxRepository(session).add_many(
            DELIVER_BATCH_WEBHOOK_TASK, settings.queue_for_model(settings.model), [[batch.id]])
    return CreatedBatch(batch=batch, outbox_ids=outbox_ids)


# --- reading ----------------------------------------------------------------------
def get_batch(session: Session, tenant_id: str, batch_id: str) -> Batch:
    batch = BatchRepository(session).get(tenant_id, batch_id)
    if batch is None:
        raise NotFound("no such batch", field="batch_id")
    return batch


def list_batches(session: Session, tenant_id: str, *, after: str | None, limit: int) -> BatchList:
    repo = BatchRepository(session)
    cursor = None
    if after is not None:
        cursor = repo.get(tenant_id, after)
        if cursor is None:
            raise NotFound("after does not name a batch", field="after")
    rows = repo.page(tenant_id, after=cursor, limit=limit)
    page = [describe(session, b) for b in rows[:limit]]
    return BatchList(data=page, first_id=page[0].id if page else None, last_id=page[-1].id if page else None,
                     has_more=len(rows) > limit)


def iter_partial(session: Session, batch: Batch, which: str) -> Iterator[str]:
    """The output (``which`` = "output") or error lines of every line finished so far, in file order.

    Works while the batch runs and after; the finished files hold the same lines.
    """
    job = job_of(session, batch)
    if job is None:
        return
    expired = batch.expire_requested_at is not None
    for rendered in render_lines(session, job, expired=expired):
        if rendered[0] == which:
            yield rendered[1]


# --- cancelling and expiring ----------------------------------------------------------
def cancel_batch(session: Session, tenant_id: str, batch_id: str) -> tuple[Batch, list[str]]:
    """Stop lines that have not started; running chunks finish and keep their lines. Idempotent."""
    batch = get_batch(session, tenant_id, batch_id)
    status = batch_status(batch, job_of(session, batch))
    if status == "cancelling":
        return batch, []
    if status not in ("validating", "in_progress"):
        raise Conflict(f"batch is already {status}", field="batch_id")
    assert batch.job_id is not None
    _, outbox_ids = jobs_service.cancel_job(session, tenant_id, batch.job_id)
    return batch, outbox_ids


def _expire(session: Session, batch: Batch, now: datetime) -> list[str]:
    assert batch.job_id is not None
    batch.expire_requested_at = now
    _, outbox_ids = jobs_service.cancel_job(session, batch.tenant_id, batch.job_id)
    return outbox_ids


def expire_if_due(session: Session, batch: Batch) -> list[str]:
    """Expire this batch if its window passed while it runs (called when it is read); outbox ids to relay."""
    now = utcnow()
    job = job_of(session, batch)
    if (job is None or batch.expires_at is None or batch.expires_at >= now or batch.expire_requested_at
            or job.status not in (JobStatus.QUEUED, JobStatus.RUNNING)):
        return []
    return _expire(session, batch, now)


@dataclass(frozen=True)
class Expiry:
    batch_ids: list[str]
    outbox_ids: list[str]


def expire_due_batches(session: Session, settings: Settings, now: datetime | None = None) -> Expiry:
    """Every running batch whose window passed: its unfinished lines stop and will be answered in the
    error file with ``batch_expired``; finished lines are kept. The caller commits, then relays
    ``outbox_ids`` (finalize tasks of batches with nothing left running).

    Meant to run periodically (``factory batches expire --every 30``); reading a batch also expires it.
    """
    now = now or utcnow()
    expiry = Expiry([], [])
    for batch in BatchRepository(session).due_for_expiry(now):
        expiry.batch_ids.append(batch.id)
        expiry.outbox_ids.extend(_expire(session, batch, now))
    return expiry


def reads_input(session: Session, tenant_id: str, file_id: str) -> bool:
    """Whether a batch still running reads its lines from this file (so deleting it must keep the content)."""
    return BatchRepository(session).unfinished_with_input(tenant_id, file_id)
