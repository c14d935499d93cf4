"""A batch's final event (``batch.completed``, ``failed``, ``cancelled``, ``expired``), delivered by a
worker task (workers/tasks/webhooks.py) after the final status is committed.

Only what is the batch's own lives here: which event it is (``prepare``, which also counts the
attempt) and where the outcome is kept (``record``). The generic flow (``factory.webhooks.delivery``)
runs them in two short transactions with the POST between them, no session open during it.
"""

from __future__ import annotations

from sqlalchemy.orm import Session

from factory.batches.repository import BatchRepository
from factory.batches.schemas import FINAL_STATUSES
from factory.batches.status import describe
from factory.config import Settings
from factory.db.base import utcnow
from factory.webhooks import delivery as webhook_delivery
from factory.webhooks.delivery import Delivery
from factory.webhooks.signing import event

DELIVER_BATCH_WEBHOOK_TASK = "factory.deliver_batch_webhook"


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
    event_id, payload = event(f"batch.{out.status}", {"id": batch.id}, finished)
    batch.webhook_attempts += 1
    return Delivery(batch.webhook_url, event_id, payload)


def record(session: Session, batch_id: str, error: str | None) -> None:
    """The attempt's outcome: delivered (``error`` None) or the reason it was not."""
    batch = BatchRepository(session).get_by_id(batch_id)
    if batch is None:
        return
    if error is None:
        batch.webhook_delivered_at, batch.webhook_last_error = utcnow(), None
    else:
        batch.webhook_last_error = error


def deliver(settings: Settings, batch_id: str) -> str:
    """One attempt at the batch's final event, the POST outside any transaction; the outcome
    (``factory.webhooks.delivery.DELIVERED``, ``FAILED``, ``REFUSED`` or ``SKIPPED``)."""
    return webhook_delivery.deliver(settings, lambda session: prepare(session, batch_id),
                                    lambda session, error: record(session, batch_id, error))
