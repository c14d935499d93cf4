"""Transactional outbox: "enqueue this task" written in the same transaction as the rows.

After commit the API (or the reconciler, for anything left behind by a crash)
publishes unsent messages to the broker and stamps ``sent_at``. A message sent
twice is harmless: tasks are idempotent and claim their chunk by lease.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Index, String
from sqlalchemy.orm import Mapped, mapped_column

from factory.db.base import Base, utcnow


class OutboxMessage(Base):
    __tablename__ = "outbox"
    __table_args__ = (Index("ix_outbox_unsent", "sent_at", "created_at"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    task_name: Mapped[str] = mapped_column(String(128))
    queue: Mapped[str] = mapped_column(String(160))
    args: Mapped[list[Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    sent_at: Mapped[datetime | None] = mapped_column(default=None)
