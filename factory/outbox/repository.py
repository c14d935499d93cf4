"""SQL for the outbox table."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.orm import Session

from factory.db.base import new_id, utcnow
from factory.db.models import OutboxMessage


class OutboxRepository:
    def __init__(self, session: Session) -> None:
        self.session = session

    def add_many(self, task_name: str, queue: str, arg_lists: Sequence[list[Any]]) -> list[str]:
        ids = [new_id("msg") for _ in arg_lists]
        rows = [
            {"id": mid, "task_name": task_name, "queue": queue, "args": args, "created_at": utcnow()}
            for mid, args in zip(ids, arg_lists, strict=True)
        ]
        if rows:  # Core, not the ORM entity: a big batch has thousands of messages
            self.session.execute(insert(OutboxMessage.__table__), rows)  # type: ignore[arg-type]
        return ids

    def get_unsent(self, ids: Sequence[str] | None = None, limit: int = 1000) -> list[OutboxMessage]:
        stmt = select(OutboxMessage).where(OutboxMessage.sent_at.is_(None))
        if ids is not None:
            stmt = stmt.where(OutboxMessage.id.in_(ids))
        return list(self.session.scalars(stmt.order_by(OutboxMessage.created_at).limit(limit)))

    def mark_sent(self, message_ids: Sequence[str]) -> None:
        self.session.execute(
            update(OutboxMessage).where(OutboxMessage.id.in_(message_ids)).values(sent_at=utcnow())
        )
