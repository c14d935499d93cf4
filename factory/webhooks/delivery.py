"""Delivering a signed event: the URL check when one is saved, one POST, and the flow around it that
keeps the POST outside any database transaction (see the package docstring)."""

from __future__ import annotations

import ipaddress
import json
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx
from sqlalchemy.orm import Session

from factory.config import Settings
from factory.db.session import session_scope
from factory.errors import InvalidInput
from factory.webhooks.signing import sign

DELIVERED, REFUSED, FAILED, SKIPPED = "delivered", "refused", "failed", "skipped"
MAX_BACKOFF_S = 60


class WebhookRefused(Exception):
    """The URL may never be called (private address): retrying will not help."""


class WebhookFailed(Exception):
    """The receiver did not answer 2xx in time: retried later."""


@dataclass(frozen=True)
class Delivery:
    """What one attempt sends: plain values, read in a transaction that is over before the POST."""
    url: str
    event_id: str
    payload: dict[str, Any]


def check_url(url: str, settings: Settings, field: str = "webhook_url") -> None:
    """When a webhook URL is saved: an http(s) URL with a host and no credentials, and a secret to sign with."""
    if settings.webhook_secret is None:
        raise InvalidInput("webhooks need FACTORY_WEBHOOK_SECRET to be set on the server", field=field)
    try:
        parts = urlsplit(url)
    except ValueError:
        raise InvalidInput(f"{field} is not a valid URL", field=field) from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidInput(f"{field} must be an http or https URL with a host", field=field)
    if parts.username or parts.password:
        raise InvalidInput(f"{field} must not carry credentials", field=field)


def _refuse_private(host: str, port: int) -> None:
    try:
        infos = socket.getaddrinfo(host, port, proto=socket.IPPROTO_TCP)
    except OSError as exc:
        raise WebhookFailed(f"cannot resolve the webhook host ({type(exc).__name__})") from None
    for info in infos:
        address = ipaddress.ip_address(info[4][0])
        if address.is_private or address.is_loopback or address.is_link_local or address.is_reserved:
            raise WebhookRefused("the webhook host resolves to a private address")


def post(settings: Settings, delivery: Delivery) -> None:
    """One signed delivery attempt; raises WebhookFailed (retry) or WebhookRefused (give up)."""
    assert settings.webhook_secret is not None
    parts = urlsplit(delivery.url)
    if not settings.webhook_allow_private:
        _refuse_private(parts.hostname or "", parts.port or (443 if parts.scheme == "https" else 80))
    body = json.dumps(delivery.payload, separators=(",", ":"))
    timestamp = int(time.time())
    headers = {
        "content-type": "application/json",
        "webhook-id": delivery.event_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": sign(settings.webhook_secret.get_secret_value(), delivery.event_id, timestamp, body),
        "user-agent": "content-factory-webhooks",
    }
    try:
        resp = httpx.post(delivery.url, content=body.encode(), headers=headers, timeout=settings.webhook_timeout_s,
                          follow_redirects=False)
    except httpx.HTTPError as exc:
        raise WebhookFailed(f"delivery failed: {type(exc).__name__}") from None
    if not 200 <= resp.status_code < 300:
        raise WebhookFailed(f"receiver answered HTTP {resp.status_code}")


def send(settings: Settings, delivery: Delivery) -> tuple[str, str | None]:
    """One attempt: ("delivered", None), ("refused", why: never retry) or ("failed", why: retry later)."""
    try:
        post(settings, delivery)
    except WebhookRefused as exc:
        return REFUSED, str(exc)
    except WebhookFailed as exc:
        return FAILED, str(exc)
    return DELIVERED, None


def deliver(settings: Settings, prepare: Callable[[Session], Delivery | None],
            record: Callable[[Session, str | None], None]) -> str:
    """One attempt of a domain's event: ``prepare`` reads what to send in a short transaction of its own
    (None: nothing to send); the POST goes out after that session is committed and closed, so a slow
    receiver never holds a database connection; ``record`` keeps the outcome (None when delivered, else
    why not) in another short transaction. Returns the outcome (``SKIPPED`` when nothing was sent)."""
    with session_scope(settings.database_url) as session:
        delivery = prepare(session)
    if delivery is None:
        return SKIPPED
    outcome, error = send(settings, delivery)
    with session_scope(settings.database_url) as session:
        record(session, error)
    return outcome


def retry_after(settings: Settings, outcome: str, attempts_before: int) -> int | None:
    """Seconds to wait before the next attempt after ``outcome``, with ``attempts_before`` attempts made
    before this one; None when there is no next one (delivered, refused, skipped, or out of attempts)."""
    if outcome != FAILED or attempts_before + 1 >= settings.webhook_max_attempts:
        return None
    return min(MAX_BACKOFF_S, 1 << attempts_before)
