"""Leader leases: "only one of these processes acts at a time", kept in the database.

A row per role (e.g. ``reconciler``), taken or renewed with one conditional
UPDATE, exactly like a chunk's lease. It lives next to the data it protects, so it
works on SQLite and PostgreSQL alike and survives a broker that lost its data.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import String
from sqlalchemy.orm import Mapped, mapped_column

from factory.db.base import Base, utcnow


class LeaderLease(Base):
    __tablename__ = "leader_leases"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    owner: Mapped[str] = mapped_column(String(200))
    acquired_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime] = mapped_column()
