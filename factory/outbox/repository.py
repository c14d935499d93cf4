"""SQL for the outbox table."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

from pydantic_core import to_json
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from factory.db.base import IdMaker, utcnow
from factory.db.bulk import insert_rows
from factory.db.models import OutboxMessage


class Pending(NamedTuple):
    id: str
    task_name: str
    queue: str
    args: list[Any]


_COLUMNS = ("id", "task_name", "queue", "args", "created_at")


class OutboxRepository:
    def __init__(self, session: Session) -> None:
        self.session = session

    def add_many(self, task_name: str, queue: str, arg_lists: Sequence[list[Any]]) -> list[str]:
        """One message per argument list (a big batch has thousands: one bulk insert); their ids."""
        return [m.id for m in self.add_pending(task_name, queue, arg_lists)]

    def add_pending(self, task_name: str, queue: str, arg_lists: Sequence[list[Any]]) -> list[Pending]:
        """Like ``add_many``, returning the messages themselves, so the caller can publish them after
        its commit without reading them back (``relay.publish_new``)."""
        make_id, now = IdMaker("msg"), utcnow()
        messages = [Pending(make_id(), task_name, queue, args) for args in arg_lists]
        insert_rows(self.session, OutboxMessage.__table__, _COLUMNS,  # type: ignore[arg-type]
                    [(m.id, task_name, queue, to_json(m.args).decode(), now) for m in messages])
        return messages

    def get_unsent(self, ids: Sequence[str] | None = None, limit: int = 1000) -> list[Pending]:
        """Unsent messages, oldest first, as plain rows (id, task_name, queue, args): a relay reads
        thousands at a time and needs no ORM objects."""
        stmt = select(OutboxMessage.id, OutboxMessage.task_name, OutboxMessage.queue, OutboxMessage.args).where(
            OutboxMessage.sent_at.is_(None))
        if ids is not None:
            stmt = stmt.where(OutboxMessage.id.in_(ids))
        stmt = stmt.order_by(OutboxMessage.created_at, OutboxMessage.id).limit(limit)
        return [Pending(*row) for row in self.session.execute(stmt)]

    def mark_sent(self, message_ids: Sequence[str]) -> None:
        self.session.execute(
            update(OutboxMessage).where(OutboxMessage.id.in_(message_ids)).values(sent_at=utcnow())
            .execution_options(synchronize_session=False)
        )
