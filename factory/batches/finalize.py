"""Finalizing a batch (runs in the worker's finalize step): its output and error files, once.

Returns the webhook delivery to relay after the final status is committed.
"""

from __future__ import annotations

import hashlib
import tempfile
from dataclasses import dataclass
from typing import IO, Any

from sqlalchemy.orm import Session

from factory.batches.chunks import INPUT_KEY
from factory.batches.output import ERROR, OUTPUT, Tally
from factory.batches.repository import BatchRepository
from factory.batches.status import render_lines
from factory.batches.webhooks import DELIVER_BATCH_WEBHOOK_TASK
from factory.db.base import utcnow
from factory.db.models import Job
from factory.files import service as files_service
from factory.outbox.repository import OutboxRepository
from factory.storage import ObjectStore


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
        for which, line in render_lines(session, job, expired=expired, tally=tally):
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
    return OutboxRepository(session).add_many(DELIVER_BATCH_WEBHOOK_TASK, job.queue, [[batch.id]])
