"""Retention: uploads and results older than a number of days are purged, a bounded amount per pass.

A reconciler step (``Reconciler._purge_expired``). Settings: ``FACTORY_RETENTION_DAYS`` for results
(ended jobs, batches and campaigns: their rows, result shards, error files, exports, datasets and a
batch's output and error files) and ``FACTORY_UPLOAD_RETENTION_DAYS`` for uploaded files (unset: the
same as results); both unset keeps everything. A job still queued, running, finalizing or cancelling
is never touched, nor an upload a running batch still reads its lines from.

Bounded: at most ``FACTORY_RETENTION_MAX_ROWS_PER_PASS`` files and as many jobs, and about
``FACTORY_RETENTION_MAX_OBJECTS_PER_PASS`` objects; a job with more objects than are left this pass
loses that many now and its rows in a later pass, once its last object is gone. Same order as an
erasure: rows deleted, objects deleted, then the commit; whatever a failure leaves, the next pass
finishes (a row is never deleted before its objects).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy.orm import Session

from factory.batches import service as batches_service
from factory.config import Settings
from factory.db.base import utcnow
from factory.db.models import Job
from factory.files import service as files_service
from factory.privacy.erasure import delete_objects
from factory.privacy.repository import PrivacyRepository
from factory.storage import ObjectStore
from factory.storage.keys import job_prefix


@dataclass
class Purged:
    files: int = 0
    jobs: int = 0
    objects: int = 0


def upload_retention_days(settings: Settings) -> float | None:
    return settings.upload_retention_days or settings.retention_days


def purge_expired(session: Session, settings: Settings, store: ObjectStore, now: datetime | None = None) -> Purged:
    """One bounded pass (see the module); the caller commits."""
    now = now or utcnow()
    purged = Purged()
    upload_days = upload_retention_days(settings)
    if upload_days is not None:
        _purge_files(session, settings, store, files_service.UPLOAD_PURPOSES, now - timedelta(days=upload_days),
                     purged)
    if settings.retention_days is not None:
        cutoff = now - timedelta(days=settings.retention_days)
        _purge_jobs(session, settings, store, cutoff, purged)
        _purge_files(session, settings, store, (files_service.GENERATED_PURPOSE,), cutoff, purged)
        repo = PrivacyRepository(session)
        for batch in repo.failed_batches_before(cutoff, settings.retention_max_rows_per_pass):
            repo.delete_batch(batch.id)
    return purged


def _purge_files(session: Session, settings: Settings, store: ObjectStore, purposes: tuple[str, ...],
                 cutoff: datetime, purged: Purged) -> None:
    for row in PrivacyRepository(session).files_created_before(purposes, cutoff,
                                                               settings.retention_max_rows_per_pass):
        if batches_service.reads_input(session, row.tenant_id, row.id):
            continue  # a running batch reads its lines from it: it goes when the batch has ended
        files_service.delete_file(session, store, row.tenant_id, row.id)
        purged.files += 1
        purged.objects += 1


def _purge_jobs(session: Session, settings: Settings, store: ObjectStore, cutoff: datetime,
                purged: Purged) -> None:
    repo = PrivacyRepository(session)
    for job in repo.jobs_finished_before(cutoff, settings.retention_max_rows_per_pass):
        room = settings.retention_max_objects_per_pass - purged.objects
        if room <= 0:
            return
        keys = list(store.list_keys(job_prefix(job.tenant_id, job.id)))
        if len(keys) > room:  # part of its objects now, its rows once the last object is gone
            purged.objects += delete_objects(store, keys[:room])
            return
        files = _purge_job_rows(session, store, job)
        purged.objects += delete_objects(store, keys) + files
        purged.files += files
        purged.jobs += 1


def _purge_job_rows(session: Session, store: ObjectStore, job: Job) -> int:
    """The job's batch (with its output and error files) and the job itself; returns the files deleted."""
    repo = PrivacyRepository(session)
    batch = repo.batch_of(job.id)
    deleted = 0
    if batch is not None:
        for file_id in (batch.output_file_id, batch.error_file_id):
            if file_id is not None and repo.file(job.tenant_id, file_id) is not None:
                files_service.delete_file(session, store, job.tenant_id, file_id)
                deleted += 1
        repo.delete_batch(batch.id)
    repo.delete_job(job.id)
    return deleted
