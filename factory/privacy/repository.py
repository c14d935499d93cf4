"""The only place with SQL for erasure and retention."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import case, delete, literal, null, or_, select, update
from sqlalchemy.orm import Session

from factory.db.models import TERMINAL_JOB_STATUSES, AugmentationSourceRow, Batch, Item, Job, StoredFile
from factory.jobs.schemas import SOURCE_FILE

# Job options: the upload a job's records were read from (campaign audience, augmentation dataset),
# and where the erasure of the job's copies stands once that upload was deleted.
ERASURE = "erasure"
ERASURE_PENDING, ERASURE_DONE = "pending", "done"
# What an erased item's error says instead of its old text (which may quote the record).
ERASED_ERROR = "erased: the file this item was made from was deleted"


class PrivacyRepository:
    def __init__(self, session: Session) -> None:
        self.session = session

    # --- erasure -----------------------------------------------------------------
    def jobs_derived_from(self, tenant_id: str, file_id: str) -> list[Job]:
        """Jobs whose items copy the file's content: read from it at submit, or a batch's input."""
        batch_jobs = select(Batch.job_id).where(Batch.tenant_id == tenant_id, Batch.input_file_id == file_id,
                                                Batch.job_id.is_not(None))
        return list(self.session.scalars(
            select(Job).where(Job.tenant_id == tenant_id,
                              or_(Job.options[SOURCE_FILE].as_string() == file_id, Job.id.in_(batch_jobs)))
            .order_by(Job.created_at).with_for_update()
        ))

    def jobs_pending_erasure(self, limit: int) -> list[Job]:
        """Ended jobs whose source file was deleted while they ran, oldest first."""
        return list(self.session.scalars(
            select(Job).where(Job.options[ERASURE].as_string() == ERASURE_PENDING,
                              Job.status.in_(TERMINAL_JOB_STATUSES))
            .order_by(Job.finished_at).limit(limit).with_for_update(skip_locked=True)
        ))

    def redact_items(self, job_id: str) -> None:
        """Keep every item row and its state (the ledger), drop what came from the file or was made from
        it: the key (a recipient id may be an e-mail address), record, prompt, request, text, copy."""
        self.session.execute(
            update(Item).where(Item.job_id == job_id)
            .values(key=Item.id, record=literal({}, Item.record.type), prompt="", request=null(), text=null(),
                    fields=null(), error=case((Item.error.is_(None), null()), else_=literal(ERASED_ERROR)))
        )

    def delete_source_rows(self, job_id: str) -> None:
        self.session.execute(delete(AugmentationSourceRow).where(AugmentationSourceRow.job_id == job_id))

    def batch_of(self, job_id: str) -> Batch | None:
        return self.session.scalar(select(Batch).where(Batch.job_id == job_id))

    def file(self, tenant_id: str, file_id: str) -> StoredFile | None:
        return self.session.scalar(select(StoredFile).where(StoredFile.tenant_id == tenant_id,
                                                            StoredFile.id == file_id))

    def delete_file_rows(self, tenant_id: str, file_ids: Sequence[str]) -> None:
        if file_ids:
            self.session.execute(delete(StoredFile).where(StoredFile.tenant_id == tenant_id,
                                                          StoredFile.id.in_(list(file_ids))))

    # --- retention ---------------------------------------------------------------
    def files_created_before(self, purposes: Sequence[str], cutoff: datetime, limit: int) -> list[StoredFile]:
        return list(self.session.scalars(
            select(StoredFile).where(StoredFile.purpose.in_(list(purposes)), StoredFile.created_at < cutoff)
            .order_by(StoredFile.created_at).limit(limit).with_for_update(skip_locked=True)
        ))

    def jobs_finished_before(self, cutoff: datetime, limit: int) -> list[Job]:
        """Ended jobs only: a queued, running, finalizing or cancelling job is never a candidate."""
        return list(self.session.scalars(
            select(Job).where(Job.status.in_(TERMINAL_JOB_STATUSES), Job.finished_at < cutoff)
            .order_by(Job.finished_at).limit(limit).with_for_update(skip_locked=True)
        ))

    def failed_batches_before(self, cutoff: datetime, limit: int) -> list[Batch]:
        """Batches refused at validation (no job: nothing ran, nothing was generated)."""
        return list(self.session.scalars(
            select(Batch).where(Batch.job_id.is_(None), Batch.created_at < cutoff)
            .order_by(Batch.created_at).limit(limit)
        ))

    def delete_batch(self, batch_id: str) -> None:
        self.session.execute(delete(Batch).where(Batch.id == batch_id))

    def delete_job(self, job_id: str) -> None:
        """The job row; its chunks, items, source rows and verdicts go with it (ON DELETE CASCADE)."""
        self.session.execute(delete(Job).where(Job.id == job_id))
