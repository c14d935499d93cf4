"""Request fingerprints for Idempotency-Key, and webhook signatures as the OpenAI SDK verifies them."""

from __future__ import annotations

import base64
import json
import time

import httpx
import pytest
from openai import OpenAI
from openai._exceptions import InvalidWebhookSignatureError

from factory.config import Settings
from factory.idempotency.service import RequestFingerprint, valid_key
from factory.webhooks import delivery, signing


def _multipart(boundary: str, content: bytes) -> tuple[str, bytes]:
    request = httpx.Request("POST", "http://x/v1/files", files={"file": ("in.jsonl", content)},
                            data={"purpose": "batch"},
                            headers={"content-type": f"multipart/form-data; boundary={boundary}"})
    return request.headers["content-type"], request.read()


def _fingerprint(content_type: str, body: bytes, chunk: int) -> str:
    fp = RequestFingerprint("POST", "/v1/files", "", content_type)
    for i in range(0, len(body), chunk):
        fp.update(body[i:i + chunk])
    return fp.hexdigest()


@pytest.mark.parametrize("chunk", [1, 7, 64, 1 << 16])
def test_multipart_fingerprint_ignores_the_random_boundary(chunk: int) -> None:
    content = b'{"a": 1}\n' * 50
    ct1, body1 = _multipart("a" * 32, content)
    ct2, body2 = _multipart("f0" * 16, content)
    assert body1 != body2
    assert _fingerprint(ct1, body1, chunk) == _fingerprint(ct2, body2, 1 << 16)
    ct3, body3 = _multipart("a" * 32, content + b"x")
    assert _fingerprint(ct3, body3, chunk) != _fingerprint(ct1, body1, chunk)


def test_json_fingerprint_covers_path_and_body() -> None:
    def fp(path: str, body: bytes) -> str:
        f = RequestFingerprint("POST", path, "", "application/json")
        f.update(body)
        return f.hexdigest()

    assert fp("/v1/batches", b"{}") == fp("/v1/batches", b"{}")
    assert fp("/v1/batches", b"{}") != fp("/v1/jobs", b"{}")
    assert fp("/v1/batches", b"{}") != fp("/v1/batches", b'{"a":1}')


def test_key_syntax() -> None:
    assert valid_key("abc-123_XYZ:1")
    assert not valid_key("") and not valid_key("has space") and not valid_key("x" * 256) and not valid_key("é")


@pytest.mark.parametrize("secret", ["plain-secret", "whsec_" + base64.b64encode(b"0123456789abcdef").decode()])
def test_signature_verifies_with_the_openai_sdk(secret: str) -> None:
    event_id, payload = signing.event("batch.completed", {"id": "batch_" + "a" * 28}, 1_800_000_000)
    body = json.dumps(payload, separators=(",", ":"))
    ts = int(time.time())
    headers = {"webhook-id": event_id, "webhook-timestamp": str(ts),
               "webhook-signature": signing.sign(secret, event_id, ts, body)}
    event = OpenAI(api_key="test").webhooks.unwrap(body, headers, secret=secret)
    assert event.type == "batch.completed" and event.data.id == "batch_" + "a" * 28
    with pytest.raises(InvalidWebhookSignatureError):
        OpenAI(api_key="test").webhooks.unwrap(body.replace("completed", "cancelled"), headers, secret=secret)


def test_event_id_is_stable_per_batch_and_status() -> None:
    def event_id(event_type: str, subject: str, created_at: int) -> str:
        return signing.event(event_type, {"id": subject}, created_at)[0]

    assert event_id("batch.completed", "batch_x", 1) == event_id("batch.completed", "batch_x", 2)
    assert event_id("batch.completed", "batch_x", 1) != event_id("batch.expired", "batch_x", 1)
    assert event_id("batch.completed", "batch_x", 1) != event_id("batch.completed", "batch_y", 1)


def test_an_event_carries_its_domain_data_as_given() -> None:
    event_id, payload = signing.event("pipeline.run.succeeded", {"id": "run_1", "pipeline_id": "pl_1"}, 5)
    assert payload == {"id": event_id, "object": "event", "type": "pipeline.run.succeeded", "created_at": 5,
                       "data": {"id": "run_1", "pipeline_id": "pl_1"}}
    assert event_id.startswith("evt_") and len(event_id) == 32


def test_only_a_failed_attempt_is_retried_with_backoff_until_the_attempts_run_out() -> None:
    settings = Settings(webhook_max_attempts=3)
    assert [delivery.retry_after(settings, delivery.FAILED, n) for n in range(3)] == [1, 2, None]
    assert delivery.retry_after(Settings(webhook_max_attempts=20), delivery.FAILED, 10) == delivery.MAX_BACKOFF_S
    for outcome in (delivery.DELIVERED, delivery.REFUSED, delivery.SKIPPED):
        assert delivery.retry_after(settings, outcome, 0) is None
