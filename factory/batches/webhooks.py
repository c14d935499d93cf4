"""A batch's final event (``batch.completed``, ``failed``, ``cancelled``, ``expired``), delivered by a
worker task (workers/tasks/webhooks.py) after the final status is committed.

The task reads what to send in one short transaction (``prepare``, which also counts the
attempt), POSTs it with no transaction open (``factory.webhooks.send``), then records the
outcome in another (``record``): a slow receiver never holds a database connection.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy.orm import Session

from factory import webhooks
from factory.batches.repository import BatchRepository
from factory.batches.schemas import FINAL_STATUSES
from factory.batches.status import describe
from factory.db.base import utcnow

DELIVER_BATCH_WEBHOOK_TASK = "factory.deliver_batch_webhook"


@dataclass(frozen=True)
class Delivery:
    batch_id: str
    url: str
    event_id: str
    payload: dict[str, Any]


def prepare(session: Session, batch_id: str) -> Delivery | None:
    """What to send for the batch's final status, one more attempt counted; None when there is nothing
    to send (no webhook, already delivered, not final yet)."""
    batch = BatchRepository(session).get_by_id(batch_id)
    if batch is None or not batch.webhook_url or batch.webhook_delivered_at is not None:
        return None
    out = describe(session, batch)
    if out.status not in FINAL_STATUSES:
        return None
    finished = out.completed_at or out.failed_at or out.cancelled_at or out.expired_at or int(utcnow().timestamp())
    event_id, payload = webhooks.event(f"batch.{out.status}", batch.id, finished)
    batch.webhook_attempts += 1
    return Delivery(batch.id, batch.webhook_url, event_id, payload)


def record(session: Session, delivery: Delivery, error: str | None) -> None:
    """The attempt's outcome: delivered (``error`` None) or the reason it was not."""
    batch = BatchRepository(session).get_by_id(delivery.batch_id)
    if batch is None:
        return
    if error is None:
        batch.webhook_delivered_at, batch.webhook_last_error = utcnow(), None
    else:
        batch.webhook_last_error = error
