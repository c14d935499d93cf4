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

import hashlib
import logging
import secrets
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import IO, Any

from sqlalchemy.orm import Session

from factory.augmentation.repository import AugmentationRepository
from factory.batches import lines as batch_lines
from factory.batches import webhooks
from factory.batches.chunks import ChunkPlanner, InputChanged, chunk_items, clean_line
from factory.batches.lines import LineContext, LineError
from factory.batches.output import ERROR, OUTPUT, Tally, group_lines, render_line
from factory.batches.repository import BatchRepository
from factory.batches.schemas import (
    BatchCreate,
    BatchError,
    BatchErrors,
    BatchList,
    BatchOut,
    BatchUsage,
    Progress,
    RequestCounts,
)
from factory.chat.schemas import DEFAULT_MAX_TOKENS
from factory.config import Settings
from factory.db.base import IdMaker, new_id, utcnow
from factory.db.models import Batch, Chunk, ChunkState, ItemState, Job, JobStatus, StoredFile
from factory.errors import Conflict, InvalidInput, NotFound
from factory.files import service as files_service
from factory.jobs import service as jobs_service
from factory.jobs.execution import UnreadableChunk
from factory.jobs.repository import JobRepository, json_text
from factory.jobs.writer import JobWriter
from factory.outbox.repository import OutboxRepository, Pending
from factory.storage import ObjectStore

log = logging.getLogger(__name__)

KIND = "batch"
WINDOWS = {"24h": 24 * 3600}
TERMINAL = ("completed", "failed", "cancelled", "expired")
# The job option naming the stored input file, which the chunks' byte ranges point into.
INPUT_KEY = "input_key"
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


def _ts(value: datetime | None) -> int | None:
    return int(value.timestamp()) if value is not None else None


# --- creating -------------------------------------------------------------------
def check_request(session: Session, settings: Settings, tenant_id: str, body: BatchCreate) -> StoredFile:
    """Everything about the request itself (not the file's lines): a 4xx before anything is written."""
    if body.endpoint not in batch_lines.SUPPORTED_URLS:
        raise InvalidInput("endpoint must be one of " + ", ".join(batch_lines.SUPPORTED_URLS), field="endpoint")
    if body.completion_window not in WINDOWS:
        raise InvalidInput("completion_window must be '24h'", field="completion_window")
    if body.webhook_url is not None:
        webhooks.check_url(body.webhook_url, settings)
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
            webhooks.DELIVER_BATCH_WEBHOOK_TASK, settings.queue_for_model(settings.model), [[batch.id]])
    return CreatedBatch(batch=batch, outbox_ids=outbox_ids)


# --- reading ----------------------------------------------------------------------
def get_batch(session: Session, tenant_id: str, batch_id: str) -> Batch:
    batch = BatchRepository(session).get(tenant_id, batch_id)
    if batch is None:
        raise NotFound("no such batch", field="batch_id")
    return batch


def _job(session: Session, batch: Batch) -> Job | None:
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
    job = _job(session, batch)
    if job is None:
        return
    expired = batch.expire_requested_at is not None
    for rendered in _render_lines(session, job, expired=expired):
        if rendered[0] == which:
            yield rendered[1]


def _render_lines(session: Session, job: Job, *, expired: bool,
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


# --- cancelling and expiring ----------------------------------------------------------
def cancel_batch(session: Session, tenant_id: str, batch_id: str) -> tuple[Batch, list[str]]:
    """Stop lines that have not started; running chunks finish and keep their lines. Idempotent."""
    batch = get_batch(session, tenant_id, batch_id)
    status = batch_status(batch, _job(session, batch))
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
    job = _job(session, batch)
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


# --- writing a chunk's items (runs in the worker) ------------------------------------------
def read_chunk_lines(store: ObjectStore, job_options: dict[str, Any], pending_lines: dict[str, Any]) -> bytes:
    """A chunk's bytes of the batch's input file (``UnreadableChunk`` if the file is gone)."""
    try:
        return store.get_range(job_options[INPUT_KEY], pending_lines["offset"], pending_lines["length"])
    except NotFound as exc:
        raise UnreadableChunk(f"the batch's input file cannot be read back: {exc}") from exc


def write_chunk_items(session: Session, settings: Settings, job: Job, chunk: Chunk, data: bytes, *,
                      state: ItemState = ItemState.PENDING, error: str | None = None) -> int:
    """Write the items of a chunk planned at submit from its lines of the input file; returns how many.

    Runs in the caller's transaction: the claim's (pending items, to generate), or the
    finalize step's for a chunk that ended before anyone claimed it (``state``
    cancelled, or failed with ``error``). ``data``: the chunk's bytes, read before and
    outside the transaction (``read_chunk_lines``, ``read_spans``; a chunk's range never
    changes). Raises ``UnreadableChunk`` if the stored file is no longer what was validated.
    """
    pending = chunk.pending_lines
    if pending is None:
        return 0
    try:
        # The job's model was checked against the allow-list at submit: lines naming it pass as they are.
        ctx = LineContext(settings=settings, batch_seed=job.seed, model=job.model)
        specs = list(chunk_items(ctx, data, pending))
    except InputChanged as exc:
        raise UnreadableChunk(f"the batch's input file cannot be read back: {exc}") from exc
    now = utcnow()
    ids = IdMaker("itm")
    rows = []
    for seq, spec in specs:
        item_state, item_error = (ItemState.FAILED, spec.error) if spec.error is not None else (state, error)
        # In ITEM_COLUMNS order.
        rows.append((ids(), job.tenant_id, job.id, chunk.id, seq, spec.key, spec.variant,
                     spec.record_json if spec.record_json is not None else json_text(spec.record), spec.prompt,
                     spec.request_json if spec.request_json is not None else json_text(spec.request),
                     spec.prompt_sha256, spec.seed, item_state.value, item_error,
                     None if item_state == ItemState.PENDING else now))
    repo = JobRepository(session)
    repo.add_item_rows(rows)
    chunk.pending_lines = None  # written with the items, at the next flush
    if len(rows) != pending["items"]:  # a line that no longer expands became one failed item
        repo.add_to_item_count(job.id, len(rows) - pending["items"])
    return len(rows)


def write_unclaimed_items(session: Session, settings: Settings, store: ObjectStore, job: Job) -> int:
    """Before the files are rendered: the items of chunks that ended unclaimed (cancelled, expired,
    failed), so that their lines are answered in the error file. Returns how many were written."""
    written = 0
    chunks = JobRepository(session).unwritten_chunks(job.id, (ChunkState.CANCELLED, ChunkState.FAILED))
    pendings = [c.pending_lines for c in chunks if c.pending_lines is not None]
    for chunk, data in zip(chunks, read_spans(store, job.options[INPUT_KEY], pendings), strict=True):
        failed = chunk.state == ChunkState.FAILED
        try:
            if data is None:
                raise UnreadableChunk("the input file is gone")
            written += write_chunk_items(session, settings, job, chunk, data,
                                         state=ItemState.FAILED if failed else ItemState.CANCELLED,
                                         error=chunk.last_error if failed else None)
        except UnreadableChunk:
            log.error("batch job %s: the lines of chunk %s cannot be read back; they are missing from the "
                      "output and error files", job.id, chunk.id)
    return written


# One range read covers consecutive chunks up to this span, reading over gaps (claimed chunks' lines)
# of at most READ_GAP_BYTES: a batch cancelled early has thousands of unclaimed chunks to answer.
READ_SPAN_BYTES = 8 << 20
READ_GAP_BYTES = 256 << 10


def read_spans(store: ObjectStore, key: str, pendings: list[dict[str, Any]], *,
               span_bytes: int | None = None) -> Iterator[bytes | None]:
    """Each chunk's bytes of the input file (``pendings``: their ``pending_lines``, in file order), in
    few range reads; None for a chunk whose bytes cannot be read (the file is gone)."""
    limit = READ_SPAN_BYTES if span_bytes is None else span_bytes
    group: list[dict[str, Any]] = []
    for pending in [*pendings, None]:
        if group and (pending is None or not _extends(group, pending, limit)):
            start = group[0]["offset"]
            try:
                data: bytes | None = store.get_range(key, start, group[-1]["offset"] + group[-1]["length"] - start)
            except NotFound:
                data = None
            for p in group:
                yield None if data is None else data[p["offset"] - start:p["offset"] - start + p["length"]]
            group = []
        if pending is not None:
            group.append(pending)


def _extends(group: list[dict[str, Any]], pending: dict[str, Any], limit: int) -> bool:
    end: int = group[-1]["offset"] + group[-1]["length"]
    start: int = pending["offset"]
    return end <= start <= end + READ_GAP_BYTES and start + pending["length"] - group[0]["offset"] <= limit


# --- finalizing (runs in the worker's finalize step) -------------------------------------
def generated_file_id(batch_id: str, which: str) -> str:
    """Deterministic, so a second finalization finds and overwrites the same file."""
    return "file_" + hashlib.sha256(f"{batch_id}:{which}".encode()).hexdigest()[:28]


@dataclass
class _Spool:
    fh: IO[bytes]
    digest: Any
    size: int = 0
    lines: int = 0

    def write(self, line: str) -> None:
        data = line.encode()
        self.fh.write(data)
        self.digest.update(data)
        self.size += len(data)
        self.lines += 1


def finalize_batch(session: Session, store: ObjectStore, job: Job) -> list[str]:
    """Write the output and error files (JSONL, OpenAI shapes) and register them; idempotent.

    Returns outbox ids to relay after commit (the webhook delivery, when the batch has one).
    """
    batch = BatchRepository(session).get_by_job(job.id)
    if batch is None:
        return []
    now = utcnow()
    batch.finalizing_at = batch.finalizing_at or now
    expired = batch.expire_requested_at is not None
    tally = Tally()
    with tempfile.SpooledTemporaryFile(8 << 20) as out_fh, tempfile.SpooledTemporaryFile(8 << 20) as err_fh:
        spools = {OUTPUT: _Spool(out_fh, hashlib.sha256()), ERROR: _Spool(err_fh, hashlib.sha256())}
        for which, line in _render_lines(session, job, expired=expired, tally=tally):
            spools[which].write(line)
        file_ids: dict[str, str | None] = {}
        for which, spool in spools.items():
            file_ids[which] = None
            if spool.lines:
                spool.fh.seek(0)
                file_id = generated_file_id(batch.id, which)
                files_service.register_generated(
                    session, store, batch.tenant_id, file_id=file_id, filename=f"{batch.id}_{which}.jsonl",
                    fileobj=spool.fh, size=spool.size, lines=spool.lines, sha256=spool.digest.hexdigest())
                file_ids[which] = file_id
    batch.output_file_id, batch.error_file_id = file_ids[OUTPUT], file_ids[ERROR]
    batch.usage = tally.usage()
    # Deleted by the user while the batch ran (files_service.delete_file): the content goes now. The lock
    # orders this against a delete at the same moment, which then sees the batch finished.
    if files_service.find_file(session, batch.tenant_id, batch.input_file_id, lock=True) is None:
        store.delete(job.options[INPUT_KEY])
    if expired:
        batch.expired_at = batch.expired_at or now
    if not batch.webhook_url:
        return []
    return OutboxRepository(session).add_many(webhooks.DELIVER_BATCH_WEBHOOK_TASK, job.queue, [[batch.id]])


# --- webhooks ---------------------------------------------------------------------------
def deliver_webhook(session: Session, settings: Settings, batch_id: str) -> str:
    """One delivery attempt of the batch's final event: "delivered", "skipped", "refused" or "failed" (retry)."""
    batch = BatchRepository(session).get_by_id(batch_id)
    if batch is None or not batch.webhook_url or batch.webhook_delivered_at is not None:
        return "skipped"
    out = describe(session, batch)
    if out.status not in webhooks.EVENT_STATUSES:
        return "skipped"
    finished = out.completed_at or out.failed_at or out.cancelled_at or out.expired_at or int(utcnow().timestamp())
    event_id, payload = webhooks.event(batch.id, out.status, finished)
    batch.webhook_attempts += 1
    try:
        webhooks.post(settings, batch.webhook_url, event_id, payload)
    except webhooks.WebhookRefused as exc:
        batch.webhook_last_error = str(exc)
        return "refused"
    except webhooks.WebhookFailed as exc:
        batch.webhook_last_error = str(exc)
        return "failed"
    batch.webhook_delivered_at, batch.webhook_last_error = utcnow(), None
    return "delivered"
