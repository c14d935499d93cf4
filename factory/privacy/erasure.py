"""Deleting an upload erases what was copied from it.

An uploaded file's content is copied in three ways:

- a campaign audience (``audience.file_id``): recipients' fields into items (record, merge values,
  rendered brief, generated copy) and the normalised audience, result shards and exports in storage;
- an augmentation dataset (``dataset.file_id``): rows into ``augmentation_source_rows`` and items,
  and the exported dataset, report and shards in storage;
- a batch input: each line into its items when a worker claims the line's chunk (until then the
  chunk names a byte range of the stored file), answers into the output and error files.

``erase_file`` (``DELETE /v1/files/{id}``) deletes the file and, for every job made from it, keeps
the rows the ledger needs (the job, its chunks, each item's state and counts, a batch's
``request_counts``) and drops the values: items lose key, record, prompt, request, text and copy;
source rows go; every object the job wrote goes, and a batch's output and error files. A job still
running is cancelled (what runs finishes, nothing new starts) and marked; the reconciler erases its
copies once it ended (``finish_pending``), as the batch's finalize step deletes an input file's
content it still needed.

Order, so that storage being away leaves nothing half-deleted: rows are changed and flushed, then
objects are deleted, then the caller commits. A failure before the commit rolls every row back (a
retry does it all again; deleting an object twice is harmless); a failed commit after the objects
went leaves rows whose content is gone, which the retry removes.
"""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy.orm import Session

from factory.batches import service as batches_service
from factory.db.models import Job, JobStatus
from factory.files import service as files_service
from factory.jobs import service as jobs_service
from factory.jobs.schemas import SOURCE_FILE
from factory.privacy.repository import ERASURE, ERASURE_DONE, ERASURE_PENDING, PrivacyRepository
from factory.storage import ObjectStore
from factory.storage.keys import job_prefix

__all__ = ["SOURCE_FILE", "erase_file", "finish_pending"]


def erase_file(session: Session, store: ObjectStore, tenant_id: str, file_id: str) -> list[str]:
    """Delete the file and erase its copies (see the module). Returns outbox ids to relay after commit
    (the finalize tasks of jobs it cancelled). NotFound if there is no such file."""
    files_service.get_file(session, tenant_id, file_id)  # 404 before anything changes
    repo = PrivacyRepository(session)
    outbox_ids: list[str] = []
    keys: list[str] = []
    for job in repo.jobs_derived_from(tenant_id, file_id):
        if job.options.get(ERASURE) == ERASURE_DONE:
            continue
        if job.status.is_terminal:
            keys += erase_job_rows(session, store, job)
            continue
        if job.status in (JobStatus.QUEUED, JobStatus.RUNNING):
            outbox_ids += jobs_service.cancel_job(session, tenant_id, job.id)[1]
        job.options = {**job.options, ERASURE: ERASURE_PENDING}
    session.flush()
    files_service.delete_file(session, store, tenant_id, file_id,
                              in_use=lambda: batches_service.reads_input(session, tenant_id, file_id))
    delete_objects(store, keys)
    return outbox_ids


def erase_job_rows(session: Session, store: ObjectStore, job: Job) -> list[str]:
    """Redact an ended job's rows (the caller commits) and return the keys of every object it wrote,
    for the caller to delete before its commit. Idempotent."""
    repo = PrivacyRepository(session)
    repo.redact_items(job.id)
    repo.delete_source_rows(job.id)
    keys = list(store.list_keys(job_prefix(job.tenant_id, job.id)))
    batch = repo.batch_of(job.id)
    if batch is not None:
        generated = [f for f in (batch.output_file_id, batch.error_file_id) if f is not None]
        for file_id in generated:
            row = repo.file(job.tenant_id, file_id)
            if row is not None:
                keys.append(row.storage_key)
        repo.delete_file_rows(job.tenant_id, generated)
        batch.output_file_id = batch.error_file_id = None
    job.options = {**job.options, ERASURE: ERASURE_DONE}
    session.flush()
    return keys


def delete_objects(store: ObjectStore, keys: Iterable[str]) -> int:
    """Delete each key (a missing one is not an error); a storage outage raises, before the commit."""
    count = 0
    for key in keys:
        store.delete(key)
        count += 1
    return count


def finish_pending(session: Session, store: ObjectStore, limit: int, max_objects: int) -> tuple[int, int]:
    """Erase the copies of jobs that were running when their source file was deleted and have ended
    since (a reconciler step): at most ``limit`` jobs, and no further job once ``max_objects`` objects
    are due. Returns (jobs erased, objects deleted)."""
    erased = 0
    keys: list[str] = []
    for job in PrivacyRepository(session).jobs_pending_erasure(limit):
        if erased and len(keys) >= max_objects:
            break
        keys += erase_job_rows(session, store, job)
        erased += 1
    return erased, delete_objects(store, keys)
