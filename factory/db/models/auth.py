"""Tenants and their API keys. A key's secret is never stored: only its sha256 and a short prefix."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column

from factory.db.base import Base, utcnow


class Tenant(Base):
    __tablename__ = "tenants"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    # Per-tenant overrides of the quota settings (name -> number); absent means the setting's default.
    quotas: Mapped[dict[str, int] | None] = mapped_column(JSON, default=None)


class ApiKey(Base):
    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"), index=True)
    name: Mapped[str] = mapped_column(String(128))
    # What a person sees to tell keys apart ("cf_1a2b3c4d"); the first characters of the secret.
    prefix: Mapped[str] = mapped_column(String(16))
    # sha256 of the whole secret: keys are 256-bit random, so a plain hash cannot be brute-forced.
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    scopes: Mapped[list[str]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime | None] = mapped_column(default=None)
    revoked_at: Mapped[datetime | None] = mapped_column(default=None)
    last_used_at: Mapped[datetime | None] = mapped_column(default=None)
