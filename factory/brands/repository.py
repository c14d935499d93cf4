"""The only place with SQL for brand profiles."""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from factory.db.models import BrandProfile


class BrandRepository:
    def __init__(self, session: Session) -> None:
        self.session = session

    def add(self, brand: BrandProfile) -> None:
        self.session.add(brand)
        self.session.flush()

    def latest_version(self, tenant_id: str, name: str) -> int:
        return int(self.session.scalar(
            select(func.max(BrandProfile.version)).where(BrandProfile.tenant_id == tenant_id,
                                                         BrandProfile.name == name)
        ) or 0)

    def get(self, tenant_id: str, name: str, version: int | None = None) -> BrandProfile | None:
        q = select(BrandProfile).where(BrandProfile.tenant_id == tenant_id, BrandProfile.name == name)
        if version is not None:
            return self.session.scalar(q.where(BrandProfile.version == version))
        return self.session.scalar(q.order_by(BrandProfile.version.desc()).limit(1))
