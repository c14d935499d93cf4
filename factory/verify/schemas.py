"""What ``POST /v1/items/{id}/verify`` and ``GET /v1/verifications/{id}`` answer."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel


class Reason(BaseModel):
    """Why a regeneration does not match its record. ``field``: ``weights_sha256``, ``generator``,
    ``device``, ``dtype``, ``libraries.torch``, ``libraries.transformers`` or ``prompt_sha256``, with the
    ``recorded`` value and what the regeneration had (``now``); or ``text``: ``at`` is the first
    differing character (0-based), ``recorded`` and ``now`` the two texts' lengths (never the texts)."""

    field: str
    recorded: Any = None
    now: Any = None
    at: int | None = None


class VerificationOut(BaseModel):
    id: str  # the verify job's id
    object: Literal["verification"] = "verification"
    status: str  # the verify job's status (queued, running, succeeded, failed, ...)
    item_id: str  # the item verified
    job_id: str  # its job
    result: Literal["match", "mismatch"] | None = None  # None until the worker answered (or if it failed)
    reasons: list[Reason] = []
    error: str | None = None  # why regenerating failed, if it did
    url: str
