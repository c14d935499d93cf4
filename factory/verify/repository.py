"""The rows a verification reads: the items to verify with their job, and a verify job's items."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.orm import Session

from factory.db.models import Item, ItemState, Job

# Ids per IN (...) list: well under SQLite's and PostgreSQL's parameter limits.
IN_BATCH = 500


class VerifyRepository:
    def __init__(self, session: Session) -> None:
        self.session = session

    def item_with_job(self, tenant_id: str, item_id: str) -> tuple[Item, Job] | None:
        row = self.session.execute(
            select(Item, Job).join(Job, Job.id == Item.job_id)
            .where(Item.tenant_id == tenant_id, Item.id == item_id, Job.tenant_id == tenant_id)).first()
        return None if row is None else (row[0], row[1])

    def succeeded_item_ids(self, tenant_id: str, job_id: str) -> list[str]:
        """The ids of the job's succeeded items, in id order (what a sample is drawn from)."""
        return list(self.session.scalars(
            select(Item.id).where(Item.tenant_id == tenant_id, Item.job_id == job_id,
                                  Item.state == ItemState.SUCCEEDED).order_by(Item.id)))

    def items(self, tenant_id: str, item_ids: Sequence[str]) -> list[Item]:
        """These items of the tenant, in id order."""
        found: list[Item] = []
        for start in range(0, len(item_ids), IN_BATCH):
            found.extend(self.session.scalars(
                select(Item).where(Item.tenant_id == tenant_id, Item.id.in_(item_ids[start:start + IN_BATCH]))))
        return sorted(found, key=lambda item: item.id)

    def verify_job(self, tenant_id: str, job_id: str, kind: str) -> Job | None:
        return self.session.scalars(
            select(Job).where(Job.tenant_id == tenant_id, Job.id == job_id, Job.kind == kind)).first()

    def verify_items(self, tenant_id: str, job_id: str) -> list[Item]:
        """A verify job's items (at most ``verify_max_items``), in the order they were written."""
        return list(self.session.scalars(
            select(Item).where(Item.tenant_id == tenant_id, Item.job_id == job_id).order_by(Item.key)))
