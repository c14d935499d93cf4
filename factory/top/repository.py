"""The jobs ``factory top`` shows: every job not ended yet, with its items counted by state."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from factory.db.models import Item, Job, JobStatus

ACTIVE_JOB = (JobStatus.QUEUED, JobStatus.RUNNING, JobStatus.FINALIZING, JobStatus.CANCELLING)


class TopRepository:
    def __init__(self, session: Session) -> None:
        self.session = session

    def active_jobs(self, limit: int) -> list[Job]:
        """The oldest ``limit`` jobs that have not ended (all tenants: the session is in system mode)."""
        return list(self.session.scalars(select(Job).where(Job.status.in_(ACTIVE_JOB))
                                         .order_by(Job.created_at, Job.id).limit(limit)))

    def item_states(self, job_ids: list[str]) -> dict[str, dict[str, int]]:
        """Per job: item state -> count (failed items, with the most frequent reason, come from ``failures``)."""
        out: dict[str, dict[str, int]] = {job_id: {} for job_id in job_ids}
        if not job_ids:
            return out
        rows: Any = self.session.execute(select(Item.job_id, Item.state, func.count())
                                         .where(Item.job_id.in_(job_ids)).group_by(Item.job_id, Item.state))
        for job_id, state, n in rows:
            out[job_id][str(getattr(state, "value", state))] = int(n)
        return out

    def top_failure(self, job_id: str) -> tuple[str, int] | None:
        """The most frequent failure reason of a job's items (its code: the text before the first colon)."""
        row = self.session.execute(
            select(Item.error, func.count().label("n")).where(Item.job_id == job_id, Item.error.is_not(None))
            .group_by(Item.error).order_by(func.count().desc()).limit(1)).first()
        return (str(row[0]).split(":", 1)[0][:80], int(row[1])) if row else None
