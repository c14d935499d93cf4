"""Writing a claimed chunk's items from its lines of the input file (runs in the worker).

A batch's chunks are planned at submit with the byte range of their lines
(factory/batches/chunks.py); the worker that claims one reads that range outside any
transaction and writes the items in the claim's. The finalize step does the same for
chunks that ended unclaimed (cancelled, expired), in few range reads.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

from sqlalchemy.orm import Session

from factory.batches.chunks import INPUT_KEY, InputChanged, chunk_items
from factory.batches.lines import LineContext
from factory.config import Settings
from factory.db.base import IdMaker, utcnow
from factory.db.models import Chunk, ChunkState, ItemState, Job
from factory.errors import NotFound
from factory.jobs.execution import UnreadableChunk
from factory.jobs.repository import JobRepository, json_text
from factory.storage import ObjectStore

log = logging.getLogger(__name__)


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
