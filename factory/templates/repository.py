"""The only place with SQL for prompt templates."""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from factory.db.models import PromptTemplate


class TemplateRepository:
    def __init__(self, session: Session) -> None:
        self.session = session

    def add(self, template: PromptTemplate) -> None:
        self.session.add(template)
        self.session.flush()

    def latest_version(self, tenant_id: str, name: str) -> int:
        return int(self.session.scalar(
            select(func.max(PromptTemplate.version)).where(PromptTemplate.tenant_id == tenant_id,
                                                           PromptTemplate.name == name)
        ) or 0)

    def get(self, tenant_id: str, name: str, version: int | None = None) -> PromptTemplate | None:
        q = select(PromptTemplate).where(PromptTemplate.tenant_id == tenant_id, PromptTemplate.name == name)
        if version is not None:
            return self.session.scalar(q.where(PromptTemplate.version == version))
        return self.session.scalar(q.order_by(PromptTemplate.version.desc()).limit(1))

    def list_latest(self, tenant_id: str, limit: int = 500) -> list[PromptTemplate]:
        latest = (select(PromptTemplate.name, func.max(PromptTemplate.version).label("v"))
                  .where(PromptTemplate.tenant_id == tenant_id).group_by(PromptTemplate.name).subquery())
        return list(self.session.scalars(
            select(PromptTemplate)
            .join(latest, (PromptTemplate.name == latest.c.name) & (PromptTemplate.version == latest.c.v))
            .where(PromptTemplate.tenant_id == tenant_id).order_by(PromptTemplate.name).limit(limit)
        ))
