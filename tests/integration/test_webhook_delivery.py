"""A batch's webhook delivered in process to a real receiver on loopback, on SQLite and PostgreSQL: the
flow the worker task runs (factory.batches.webhooks.deliver), retried after a 500, signed so the
OpenAI SDK verifies it, and with no database connection checked out of the pool while the receiver
holds the POST open (the receiver looks at the pool itself)."""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from openai import OpenAI
from openai._exceptions import InvalidWebhookSignatureError
from sqlalchemy.pool import QueuePool

from factory.batches import webhooks as batch_webhooks
from factory.config import Settings
from factory.db.models import Batch
from factory.db.session import get_engine, get_sessionmaker
from factory.webhooks import delivery
from tests.keys import api_test_client
from tests.webhook_receiver import webhook_receiver

SECRET = "whsec_" + base64.b64encode(b"test-webhook-secret-0123456789ab").decode()


@pytest.fixture
def settings(db_url: str, broker_url: str, tmp_path: Path) -> Settings:
    return Settings(database_url=db_url, broker_url=broker_url, storage_url=f"file://{tmp_path}/objects",
                    webhook_secret=SECRET, webhook_allow_private=True, webhook_max_attempts=3)


def failed_batch(settings: Settings, webhook_url: str) -> str:
    """A batch that failed at creation (its one line is a PUT): final at once, its webhook due."""
    line = {"custom_id": "a", "method": "PUT", "url": "/v1/chat/completions", "body": {}}
    client: TestClient
    with api_test_client(settings) as client:
        file = client.post("/v1/files", files={"file": ("in.jsonl", json.dumps(line).encode() + b"\n")},
                           data={"purpose": "batch"}).json()
        r = client.post("/v1/batches", json={"input_file_id": file["id"], "endpoint": "/v1/chat/completions",
                                             "completion_window": "24h", "webhook_url": webhook_url})
    assert r.status_code == 200 and r.json()["status"] == "failed", r.text
    return str(r.json()["id"])


def connections_in_use(database_url: str) -> int:
    """Connections this process has checked out of the database's pool, the fewest seen over a quarter
    of a second (SQLite's checkpoint thread borrows one for a moment every second)."""
    pool = get_engine(database_url).pool
    assert isinstance(pool, QueuePool)
    seen = []
    for _ in range(6):
        seen.append(pool.checkedout())
        time.sleep(0.05)
    return min(seen)


def batch_row(settings: Settings, batch_id: str) -> Batch:
    with get_sessionmaker(settings.database_url)() as s:
        row = s.get(Batch, batch_id)
    assert row is not None
    return row


def test_the_post_goes_out_signed_with_no_connection_checked_out_and_is_retried_once(settings: Settings) -> None:
    with webhook_receiver([500, 200]) as receiver:
        batch_id = failed_batch(settings, receiver.url)
        receiver.probe = lambda: connections_in_use(settings.database_url)
        # The probe sees a session that holds its connection (what a POST inside a transaction would be).
        with get_sessionmaker(settings.database_url)() as s:
            s.get(Batch, batch_id)
            assert receiver.probe() == 1

        assert batch_webhooks.deliver(settings, batch_id) == delivery.FAILED
        row = batch_row(settings, batch_id)
        assert (row.webhook_attempts, row.webhook_delivered_at, row.webhook_last_error) == \
               (1, None, "receiver answered HTTP 500")
        assert delivery.retry_after(settings, delivery.FAILED, 0) == 1

        assert batch_webhooks.deliver(settings, batch_id) == delivery.DELIVERED
        row = batch_row(settings, batch_id)
        assert row.webhook_attempts == 2 and row.webhook_delivered_at is not None and row.webhook_last_error is None

        assert batch_webhooks.deliver(settings, batch_id) == delivery.SKIPPED  # delivered: never sent again
        assert batch_row(settings, batch_id).webhook_attempts == 2

    assert receiver.probed == [0, 0]
    assert len(receiver.received) == 2
    (h1, b1), (h2, b2) = receiver.received
    assert h1["webhook-id"] == h2["webhook-id"] and b1 == b2
    sdk = OpenAI(api_key="test")
    event = sdk.webhooks.unwrap(b2, h2, secret=SECRET)
    assert event.type == "batch.failed" and event.data.id == batch_id and event.id == h2["webhook-id"]
    with pytest.raises(InvalidWebhookSignatureError):
        sdk.webhooks.unwrap(b2.replace(batch_id.encode(), b"batch_other"), h2, secret=SECRET)
    with pytest.raises(InvalidWebhookSignatureError):
        sdk.webhooks.unwrap(b2, h2, secret="whsec_" + base64.b64encode(b"another-secret").decode())


def test_a_private_address_is_refused_without_a_post_and_not_retried(settings: Settings) -> None:
    with webhook_receiver() as receiver:
        batch_id = failed_batch(settings, receiver.url)
        strict = settings.model_copy(update={"webhook_allow_private": False})
        assert batch_webhooks.deliver(strict, batch_id) == delivery.REFUSED
        assert delivery.retry_after(strict, delivery.REFUSED, 0) is None
    assert receiver.received == []
    row = batch_row(settings, batch_id)
    assert (row.webhook_attempts, row.webhook_delivered_at, row.webhook_last_error) == \
           (1, None, "the webhook host resolves to a private address")
