"""The only place with SQL for files."""

from __future__ import annotations

from sqlalchemy import delete, select, tuple_
from sqlalchemy.orm import Session

from factory.db.models import StoredFile


class FileRepository:
    def __init__(self, session: Session) -> None:
        self.session = session

    def add(self, row: StoredFile) -> None:
        self.session.add(row)
        self.session.flush()

    def get(self, tenant_id: str, file_id: str, *, lock: bool = False) -> StoredFile | None:
        stmt = select(StoredFile).where(StoredFile.id == file_id, StoredFile.tenant_id == tenant_id)
        return self.session.scalar(stmt.with_for_update() if lock else stmt)

    def page(self, tenant_id: str, *, after: StoredFile | None, limit: int, newest_first: bool,
             purpose: str | None) -> list[StoredFile]:
        """One page in (created_at, id) order, after the cursor row; ``limit + 1`` rows tell if there is more."""
        stmt = select(StoredFile).where(StoredFile.tenant_id == tenant_id)
        if purpose is not None:
            stmt = stmt.where(StoredFile.purpose == purpose)
        position = tuple_(StoredFile.created_at, StoredFile.id)
        if after is not None:
            cursor = tuple_(after.created_at, after.id)
            stmt = stmt.where(position < cursor if newest_first else position > cursor)
        if newest_first:
            stmt = stmt.order_by(StoredFile.created_at.desc(), StoredFile.id.desc())
        else:
            stmt = stmt.order_by(StoredFile.created_at, StoredFile.id)
        return list(self.session.scalars(stmt.limit(limit + 1)))

    def delete(self, tenant_id: str, file_id: str) -> None:
        self.session.execute(delete(StoredFile).where(StoredFile.id == file_id, StoredFile.tenant_id == tenant_id))
