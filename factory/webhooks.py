"""Webhooks, signed the Standard Webhooks way (the scheme OpenAI's webhooks use), for every domain
that notifies (batches today; scheduled pipelines' runs next).

Each delivery is an HTTP POST of a JSON event::

    {"id": "evt_…", "object": "event", "type": "batch.completed", "created_at": 1767225600,
     "data": {"id": "batch_…"}}

with three headers: ``webhook-id`` (the event id; the same on every retry, so a
receiver can drop duplicates), ``webhook-timestamp`` (unix seconds) and
``webhook-signature``: ``v1,`` + base64(HMAC-SHA256(key, "{webhook-id}.{webhook-timestamp}.{body}")).
The key is ``FACTORY_WEBHOOK_SECRET``: base64-decoded when it starts with ``whsec_``,
else its UTF-8 bytes. The OpenAI SDK verifies it as is:
``OpenAI().webhooks.unwrap(body, headers, secret=...)``.

Delivery runs in a worker task after the final state is committed, with no database
transaction open during the POST (the domain reads what to send in one short
transaction and records the outcome in another), and is retried with backoff
(``FACTORY_WEBHOOK_MAX_ATTEMPTS``). Addresses on loopback or private networks are
refused unless ``FACTORY_WEBHOOK_ALLOW_PRIVATE`` is set.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import json
import socket
import time
from typing import Any
from urllib.parse import urlsplit

import httpx

from factory.config import Settings
from factory.errors import InvalidInput

DELIVERED, REFUSED, FAILED, SKIPPED = "delivered", "refused", "failed", "skipped"


class WebhookRefused(Exception):
    """The URL may never be called (private address): retrying will not help."""


class WebhookFailed(Exception):
    """The receiver did not answer 2xx in time: retried later."""


def signing_key(secret: str) -> bytes:
    return base64.b64decode(secret[len("whsec_"):]) if secret.startswith("whsec_") else secret.encode()


def sign(secret: str, webhook_id: str, timestamp: int, body: str) -> str:
    mac = hmac.new(signing_key(secret), f"{webhook_id}.{timestamp}.{body}".encode(), hashlib.sha256)
    return "v1," + base64.b64encode(mac.digest()).decode()


def check_url(url: str, settings: Settings) -> None:
    """When a webhook URL is saved: an http(s) URL with a host and no credentials, and a secret to sign with."""
    if settings.webhook_secret is None:
        raise InvalidInput("webhooks need FACTORY_WEBHOOK_SECRET to be set on the server", field="webhook_url")
    try:
        parts = urlsplit(url)
    except ValueError:
        raise InvalidInput("webhook_url is not a valid URL", field="webhook_url") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidInput("webhook_url must be an http or https URL with a host", field="webhook_url")
    if parts.username or parts.password:
        raise InvalidInput("webhook_url must not carry credentials", field="webhook_url")


def event(event_type: str, subject_id: str, created_at: int) -> tuple[str, dict[str, Any]]:
    """(event id, payload) of ``event_type`` (``batch.completed``) about ``subject_id``; the id is derived
    from both, so every retry of one event carries the same id and a receiver can drop duplicates."""
    event_id = "evt_" + hashlib.sha256(f"{subject_id}:{event_type}".encode()).hexdigest()[:28]
    return event_id, {"id": event_id, "object": "event", "type": event_type, "created_at": created_at,
                      "data": {"id": subject_id}}


def _refuse_private(host: str, port: int) -> None:
    try:
        infos = socket.getaddrinfo(host, port, proto=socket.IPPROTO_TCP)
    except OSError as exc:
        raise WebhookFailed(f"cannot resolve the webhook host ({type(exc).__name__})") from None
    for info in infos:
        address = ipaddress.ip_address(info[4][0])
        if address.is_private or address.is_loopback or address.is_link_local or address.is_reserved:
            raise WebhookRefused("the webhook host resolves to a private address")


def post(settings: Settings, url: str, event_id: str, payload: dict[str, Any]) -> None:
    """One signed delivery attempt; raises WebhookFailed (retry) or WebhookRefused (give up)."""
    assert settings.webhook_secret is not None
    parts = urlsplit(url)
    if not settings.webhook_allow_private:
        _refuse_private(parts.hostname or "", parts.port or (443 if parts.scheme == "https" else 80))
    body = json.dumps(payload, separators=(",", ":"))
    timestamp = int(time.time())
    headers = {
        "content-type": "application/json",
        "webhook-id": event_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": sign(settings.webhook_secret.get_secret_value(), event_id, timestamp, body),
        "user-agent": "content-factory-webhooks",
    }
    try:
        resp = httpx.post(url, content=body.encode(), headers=headers, timeout=settings.webhook_timeout_s,
                          follow_redirects=False)
    except httpx.HTTPError as exc:
        raise WebhookFailed(f"delivery failed: {type(exc).__name__}") from None
    if not 200 <= resp.status_code < 300:
        raise WebhookFailed(f"receiver answered HTTP {resp.status_code}")


def send(settings: Settings, url: str, event_id: str, payload: dict[str, Any]) -> tuple[str, str | None]:
    """One attempt, outside any transaction: ("delivered", None), ("refused", why: never retry) or
    ("failed", why: retry later)."""
    try:
        post(settings, url, event_id, payload)
    except WebhookRefused as exc:
        return REFUSED, str(exc)
    except WebhookFailed as exc:
        return FAILED, str(exc)
    return DELIVERED, None
