"""The only place with SQL for quotas: a tenant's unfinished jobs and the items they still have to generate."""

from __future__ import annotations

from sqlalchemy import ColumnElement, func, select
from sqlalchemy.orm import Session

from factory.db.models import Item, ItemState, Job, JobStatus

UNFINISHED = (JobStatus.QUEUED, JobStatus.RUNNING, JobStatus.FINALIZING, JobStatus.CANCELLING)


def _unfinished(tenant_id: str, exclude_job_id: str | None) -> tuple[ColumnElement[bool], ...]:
    """The tenant's jobs that have not ended, but for ``exclude_job_id`` (the job being admitted)."""
    where = (Job.tenant_id == tenant_id, Job.status.in_(UNFINISHED))
    return (*where, Job.id != exclude_job_id) if exclude_job_id else where


class QuotaRepository:
    def __init__(self, session: Session) -> None:
        self.session = session

    def unfinished_jobs(self, tenant_id: str, exclude_job_id: str | None = None) -> int:
        return int(self.session.scalar(select(func.count()).select_from(Job)
                                       .where(*_unfinished(tenant_id, exclude_job_id))) or 0)

    def items_of_unfinished_jobs(self, tenant_id: str, exclude_job_id: str | None = None) -> int:
        """Every item of the unfinished jobs, generated or not: a cheap upper bound of the queued items."""
        return int(self.session.scalar(select(func.coalesce(func.sum(Job.item_count), 0))
                                       .where(*_unfinished(tenant_id, exclude_job_id))) or 0)

    def queued_items(self, tenant_id: str, exclude_job_id: str | None = None) -> int:
        """Items of the unfinished jobs not generated yet: their item count less the items that ended.

        Counted this way round because a batch's items are written only when a worker claims
        their chunk: items without a row yet are queued too.
        """
        ended = (select(func.count()).select_from(Item).join(Job, Item.job_id == Job.id)
                 .where(*_unfinished(tenant_id, exclude_job_id), Item.state != ItemState.PENDING))
        return self.items_of_unfinished_jobs(tenant_id, exclude_job_id) - int(self.session.scalar(ended) or 0)
