"""The only place with SQL for tenants and API keys."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from factory.db.models import ApiKey, Tenant


class AuthRepository:
    def __init__(self, session: Session) -> None:
        self.session = session

    def tenant(self, tenant_id: str) -> Tenant | None:
        return self.session.get(Tenant, tenant_id)

    def add(self, row: Tenant | ApiKey) -> None:
        self.session.add(row)
        self.session.flush()

    def key_by_hash(self, key_hash: str) -> ApiKey | None:
        return self.session.scalar(select(ApiKey).where(ApiKey.key_hash == key_hash))

    def key(self, key_id: str, tenant_id: str | None) -> ApiKey | None:
        stmt = select(ApiKey).where(ApiKey.id == key_id)
        if tenant_id is not None:
            stmt = stmt.where(ApiKey.tenant_id == tenant_id)
        return self.session.scalar(stmt)

    def keys(self, tenant_id: str | None) -> list[ApiKey]:
        stmt = select(ApiKey).order_by(ApiKey.tenant_id, ApiKey.created_at, ApiKey.id)
        if tenant_id is not None:
            stmt = stmt.where(ApiKey.tenant_id == tenant_id)
        return list(self.session.scalars(stmt))

    def any_key(self) -> bool:
        return self.session.scalar(select(ApiKey.id).limit(1)) is not None

    def touch(self, key_id: str, at: datetime) -> None:
        self.session.execute(update(ApiKey).where(ApiKey.id == key_id).values(last_used_at=at))
