"""The rules for idempotency keys (Stripe's semantics, as the OpenAI-style API expects).

- The first request with a key runs; its response (status, content type, body) is
  stored under (tenant, key) with a fingerprint of the request.
- The same key with the same request: the stored response, replayed byte for byte.
- The same key with a different request (method, path, query or body): 409.
- The same key while the first request still runs: 409 (try again shortly).
- A 5xx or a 429 (a quota: retry later) is not stored: the key is released, so a retry runs again.
Keys expire after ``FACTORY_IDEMPOTENCY_TTL_S``.

The fingerprint of a multipart body leaves out its boundary, which HTTP clients
draw at random for every attempt (a retried upload must match its first attempt).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy.orm import Session

from factory.db.base import utcnow
from factory.db.models import IdempotencyKey
from factory.idempotency.repository import IdempotencyRepository

PROCEED, REPLAY, MISMATCH, IN_PROGRESS = "proceed", "replay", "mismatch", "in_progress"
_KEY = re.compile(r"^[\x21-\x7e]{1,255}$")
_BOUNDARY = re.compile(r'boundary="?([^";]+)"?', re.IGNORECASE)


def valid_key(key: str) -> bool:
    """1 to 255 printable ASCII characters without spaces."""
    return bool(_KEY.fullmatch(key))


class RequestFingerprint:
    """sha256 over method, path, query and body, fed chunk by chunk (bodies can be 200 MB)."""

    def __init__(self, method: str, path: str, query: str, content_type: str | None) -> None:
        self._digest = hashlib.sha256(f"{method} {path}?{query}\n".encode())
        match = _BOUNDARY.search(content_type or "") if (content_type or "").startswith("multipart/") else None
        self._boundary = match.group(1).encode() if match else b""
        self._tail = b""

    def update(self, chunk: bytes) -> None:
        if not self._boundary:
            self._digest.update(chunk)
            return
        # Drop the boundary; keep a tail that could be the start of one split across chunks.
        data = (self._tail + chunk).replace(self._boundary, b"")
        keep = len(self._boundary) - 1
        self._tail = data[-keep:] if keep else b""
        self._digest.update(data[: len(data) - len(self._tail)])

    def hexdigest(self) -> str:
        self._digest.update(self._tail)
        self._tail = b""
        return self._digest.hexdigest()


@dataclass(frozen=True)
class Decision:
    action: str
    stored: IdempotencyKey | None = None


def begin(session: Session, tenant_id: str, key: str, request_hash: str, ttl_s: int) -> Decision:
    """Decide what to do with a request carrying ``key``; PROCEED claims the key (the caller commits).

    A concurrent first use of the same key raises IntegrityError on commit; call again.
    """
    repo = IdempotencyRepository(session)
    row = repo.get(tenant_id, key)
    if row is not None and row.created_at < utcnow() - timedelta(seconds=ttl_s):
        repo.delete(tenant_id, key)
        session.flush()
        row = None
    if row is None:
        repo.claim(tenant_id, key, request_hash)
        return Decision(PROCEED)
    if row.request_hash != request_hash:
        return Decision(MISMATCH, row)
    if row.status_code is None:
        return Decision(IN_PROGRESS, row)
    return Decision(REPLAY, row)


def finish(session: Session, tenant_id: str, key: str, status_code: int | None, content_type: str | None,
           body: bytes | None) -> None:
    """Store the response, or release the key when there is nothing worth replaying (5xx, 429, no response)."""
    repo = IdempotencyRepository(session)
    if status_code is None or status_code >= 500 or status_code == 429 or body is None:
        repo.delete(tenant_id, key)
    else:
        repo.complete(tenant_id, key, status_code, content_type, body)


def purge_expired(session: Session, ttl_s: int, limit: int | None = None) -> int:
    """Delete keys older than the TTL, at most ``limit`` (a reconciler step); returns how many."""
    return IdempotencyRepository(session).purge_created_before(utcnow() - timedelta(seconds=ttl_s), limit)
