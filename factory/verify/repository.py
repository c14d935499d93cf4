"""The rows a verification reads: the item to verify with its job, and a verify job's one item."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from factory.db.models import Item, Job


class VerifyRepository:
    def __init__(self, session: Session) -> None:
        self.session = session

    def item_with_job(self, tenant_id: str, item_id: str) -> tuple[Item, Job] | None:
        row = self.session.execute(
            select(Item, Job).join(Job, Job.id == Item.job_id)
            .where(Item.tenant_id == tenant_id, Item.id == item_id, Job.tenant_id == tenant_id)).first()
        return None if row is None else (row[0], row[1])

    def verify_job(self, tenant_id: str, job_id: str, kind: str) -> tuple[Job, Item] | None:
        row = self.session.execute(
            select(Job, Item).join(Item, Item.job_id == Job.id)
            .where(Job.tenant_id == tenant_id, Job.id == job_id, Job.kind == kind)).first()
        return None if row is None else (row[0], row[1])
