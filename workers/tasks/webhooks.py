"""Webhook deliveries with retries: a batch's final event, a pipeline run's end.

Each is enqueued (through the outbox) in the transaction that made its subject final, so it runs
after that is committed. Idempotent: a delivered event is never sent again; the event id is the
same on every attempt so a receiver can drop duplicates. No transaction is open during the POST
(factory/webhooks/delivery.py).
"""

from __future__ import annotations

from collections.abc import Callable

from celery import Task

from factory.batches import webhooks as batch_webhooks
from factory.config import Settings, get_settings
from factory.pipelines import webhooks as run_webhooks
from factory.pipelines.runs import DELIVER_RUN_WEBHOOK_TASK
from factory.webhooks.delivery import retry_after
from workers.celery_app import app


def _attempt(task: Task, deliver: Callable[[Settings, str], str], subject_id: str) -> str:
    """One attempt; a failed one is retried with backoff until FACTORY_WEBHOOK_MAX_ATTEMPTS."""
    settings = get_settings()
    outcome = deliver(settings, subject_id)
    wait_s = retry_after(settings, outcome, task.request.retries)
    if wait_s is not None:
        raise task.retry(countdown=wait_s)
    return outcome


@app.task(name=batch_webhooks.DELIVER_BATCH_WEBHOOK_TASK, bind=True, acks_late=True, max_retries=None)
def deliver_batch_webhook(self: Task, batch_id: str) -> str:
    return _attempt(self, batch_webhooks.deliver, batch_id)


@app.task(name=DELIVER_RUN_WEBHOOK_TASK, bind=True, acks_late=True, max_retries=None)
def deliver_pipeline_run_webhook(self: Task, run_id: str) -> str:
    return _attempt(self, run_webhooks.deliver, run_id)
