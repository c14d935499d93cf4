"""deliver_batch_webhook: POST a batch's signed final event to its webhook URL, with retries.

Enqueued (through the outbox) by the batch's finalization, so it runs after the final
status is committed. Idempotent: a delivered event is never sent again; the event id
is the same on every attempt so a receiver can drop duplicates. No transaction is open
during the POST (factory/batches/webhooks.py).
"""

from __future__ import annotations

from celery import Task

from factory import webhooks
from factory.batches import webhooks as batch_webhooks
from factory.config import get_settings
from factory.db.session import session_scope
from workers.celery_app import app


@app.task(name=batch_webhooks.DELIVER_BATCH_WEBHOOK_TASK, bind=True, acks_late=True, max_retries=None)
def deliver_batch_webhook(self: Task, batch_id: str) -> str:
    settings = get_settings()
    with session_scope(settings.database_url) as session:
        delivery = batch_webhooks.prepare(session, batch_id)
    if delivery is None:
        return webhooks.SKIPPED
    outcome, error = webhooks.send(settings, delivery.url, delivery.event_id, delivery.payload)
    with session_scope(settings.database_url) as session:
        batch_webhooks.record(session, delivery, error)
    if outcome == webhooks.FAILED and self.request.retries + 1 < settings.webhook_max_attempts:
        raise self.retry(countdown=min(60, 2 ** self.request.retries))
    return outcome
