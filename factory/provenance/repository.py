"""Finding items by what they produced."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import Row, select
from sqlalchemy.orm import Session

from factory.db.models import Item, ItemState, Job


class ProvenanceRepository:
    def __init__(self, session: Session) -> None:
        self.session = session

    def items_by_content(self, tenant_id: str, content_sha256: str, limit: int) -> Sequence[Row[Item, str]]:
        """The tenant's succeeded items whose text hashes to ``content_sha256``, newest first, with their job's
        kind (index ``ix_items_tenant_id_content_sha256``)."""
        return self.session.execute(
            select(Item, Job.kind).join(Job, Job.id == Item.job_id)
            .where(Item.tenant_id == tenant_id, Item.content_sha256 == content_sha256,
                   Item.state == ItemState.SUCCEEDED)
            .order_by(Item.finished_at.desc(), Item.id).limit(limit)
        ).all()
