"""The event a webhook carries and its Standard Webhooks signature (see the package docstring)."""

from __future__ import annotations

import base64
import hashlib
import hmac
from typing import Any


def signing_key(secret: str) -> bytes:
    return base64.b64decode(secret[len("whsec_"):]) if secret.startswith("whsec_") else secret.encode()


def sign(secret: str, webhook_id: str, timestamp: int, body: str) -> str:
    mac = hmac.new(signing_key(secret), f"{webhook_id}.{timestamp}.{body}".encode(), hashlib.sha256)
    return "v1," + base64.b64encode(mac.digest()).decode()


def event(event_type: str, data: dict[str, Any], created_at: int) -> tuple[str, dict[str, Any]]:
    """(event id, payload) of ``event_type`` (``batch.completed``) with ``data``, whose ``id`` names the
    subject (the batch, the pipeline run). The event id is derived from the type and that id, so every
    retry of one event carries the same id and a receiver can drop duplicates."""
    subject_id = data["id"]
    event_id = "evt_" + hashlib.sha256(f"{subject_id}:{event_type}".encode()).hexdigest()[:28]
    return event_id, {"id": event_id, "object": "event", "type": event_type, "created_at": created_at,
                      "data": data}
