"""Versioned records a campaign refers to: prompt templates and brand profiles.

Editing one writes a new version row; old versions stay, so a job pins the exact
version it ran with and can always be explained later.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from factory.db.base import DEFAULT_TENANT, Base, utcnow


class PromptTemplate(Base):
    __tablename__ = "templates"
    __table_args__ = (UniqueConstraint("tenant_id", "name", "version", name="uq_templates_tenant_name_version"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(String(64), default=DEFAULT_TENANT)
    name: Mapped[str] = mapped_column(String(64))
    version: Mapped[int] = mapped_column(Integer)
    channel: Mapped[str | None] = mapped_column(String(16), default=None)
    source: Mapped[str] = mapped_column(Text)
    sha256: Mapped[str] = mapped_column(String(64))
    # Declared variables and their types: {"city": "string", "visits": "integer"}.
    variables: Mapped[dict[str, Any]] = mapped_column(JSON)
    system_prompt: Mapped[str | None] = mapped_column(Text, default=None)
    params: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    description: Mapped[str | None] = mapped_column(Text, default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class BrandProfile(Base):
    __tablename__ = "brand_profiles"
    __table_args__ = (UniqueConstraint("tenant_id", "name", "version", name="uq_brand_profiles_tenant_name_version"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(String(64), default=DEFAULT_TENANT)
    name: Mapped[str] = mapped_column(String(64))
    version: Mapped[int] = mapped_column(Integer)
    # Voice, banned and required phrases, preferred terms, emoji, reading level (brands/schemas.py).
    profile: Mapped[dict[str, Any]] = mapped_column(JSON)
    sha256: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
