"""deliver_batch_webhook: POST a batch's signed final event to its webhook URL, with retries.

Enqueued (through the outbox) by the batch's finalization, so it runs after the final
status is committed. Idempotent: a delivered event is never sent again; the event id
is the same on every attempt so a receiver can drop duplicates. No transaction is open
during the POST (factory/webhooks/delivery.py).
"""

from __future__ import annotations

from celery import Task

from factory.batches import webhooks as batch_webhooks
from factory.config import get_settings
from factory.webhooks.delivery import retry_after
from workers.celery_app import app


@app.task(name=batch_webhooks.DELIVER_BATCH_WEBHOOK_TASK, bind=True, acks_late=True, max_retries=None)
def deliver_batch_webhook(self: Task, batch_id: str) -> str:
    settings = get_settings()
    outcome = batch_webhooks.deliver(settings, batch_id)
    wait_s = retry_after(settings, outcome, self.request.retries)
    if wait_s is not None:
        raise self.retry(countdown=wait_s)
    return outcome
