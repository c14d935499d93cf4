"""The only place with SQL for idempotency keys."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import delete, select, tuple_, update
from sqlalchemy.orm import Session

from factory.db.base import utcnow
from factory.db.models import IdempotencyKey


class IdempotencyRepository:
    def __init__(self, session: Session) -> None:
        self.session = session

    def get(self, tenant_id: str, key: str) -> IdempotencyKey | None:
        return self.session.scalar(select(IdempotencyKey).where(IdempotencyKey.tenant_id == tenant_id,
                                                                IdempotencyKey.key == key))

    def claim(self, tenant_id: str, key: str, request_hash: str) -> None:
        """Insert the in-progress row; raises IntegrityError if another request holds the key."""
        self.session.add(IdempotencyKey(tenant_id=tenant_id, key=key, request_hash=request_hash,
                                        created_at=utcnow()))
        self.session.flush()

    def complete(self, tenant_id: str, key: str, status_code: int, content_type: str | None, body: bytes) -> None:
        self.session.execute(
            update(IdempotencyKey).where(IdempotencyKey.tenant_id == tenant_id, IdempotencyKey.key == key)
            .values(status_code=status_code, content_type=content_type, response_body=body, completed_at=utcnow())
        )

    def delete(self, tenant_id: str, key: str) -> None:
        self.session.execute(delete(IdempotencyKey).where(IdempotencyKey.tenant_id == tenant_id,
                                                          IdempotencyKey.key == key))

    def purge_created_before(self, cutoff: datetime, limit: int | None = None) -> int:
        """Delete keys created before ``cutoff``, at most ``limit`` of them (oldest first)."""
        old = IdempotencyKey.created_at < cutoff
        if limit is not None:
            oldest = (select(IdempotencyKey.tenant_id, IdempotencyKey.key).where(old)
                      .order_by(IdempotencyKey.created_at).limit(limit))
            old = tuple_(IdempotencyKey.tenant_id, IdempotencyKey.key).in_(oldest)
        result = self.session.execute(delete(IdempotencyKey).where(old))
        return int(getattr(result, "rowcount", 0) or 0)
