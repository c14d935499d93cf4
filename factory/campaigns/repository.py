"""The only place with SQL for campaign reads: check outcomes and the items of a job."""

from __future__ import annotations

from collections.abc import Iterator

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from factory.db.models import Item
from factory.jobs.repository import JobRepository


class CampaignRepository:
    def __init__(self, session: Session) -> None:
        self.session = session

    def check_counts(self, job_id: str) -> dict[str, int]:
        rows = self.session.execute(
            select(Item.check_status, func.count()).where(Item.job_id == job_id, Item.check_status.is_not(None))
            .group_by(Item.check_status)
        )
        return {f"checks_{status}": int(n) for status, n in rows}

    def iter_items(self, job_id: str, page: int = 500) -> Iterator[Item]:
        """Every item of the job in submission order, read in pages to bound memory."""
        return JobRepository(self.session).iter_items(job_id, page)
