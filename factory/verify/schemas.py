"""What ``POST /v1/items/{id}/verify``, ``POST /v1/jobs/{id}/verify`` and ``GET /v1/verifications/{id}``
take and answer."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class Reason(BaseModel):
    """Why a regeneration does not match its record. ``field``: ``weights_sha256``, ``generator``,
    ``device``, ``dtype``, ``libraries.torch``, ``libraries.transformers`` or ``prompt_sha256``, with the
    ``recorded`` value and what the regeneration had (``now``); or ``text``: ``at`` is the first
    differing character (0-based), ``recorded`` and ``now`` the two texts' lengths (never the texts)."""

    field: str
    recorded: Any = None
    now: Any = None
    at: int | None = None


class VerifyJobRequest(BaseModel):
    """Verify a job's items: all of its succeeded items, or a random ``sample`` of them (seeded by ``seed``,
    drawn at random and recorded when not given, so a sample can be drawn again)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    sample: int | None = Field(default=None, ge=1)
    seed: int | None = Field(default=None, ge=0, le=2**31 - 1)


class VerifyCounts(BaseModel):
    total: int  # items being verified
    match: int
    mismatch: int
    failed: int  # could not be regenerated (the item's error says why)
    pending: int


class ItemMismatch(BaseModel):
    item_id: str
    reasons: list[Reason]


class VerificationOut(BaseModel):
    id: str  # the verify job's id
    object: Literal["verification"] = "verification"
    status: str  # the verify job's status (queued, running, succeeded, failed, ...)
    item_id: str | None  # the item verified; None when a job's items are
    job_id: str  # the job the items belong to
    # One item: its verdict. Many: "match" once every item matched, "mismatch" as soon as one did not;
    # None until then (or when regenerating failed).
    result: Literal["match", "mismatch"] | None = None
    reasons: list[Reason] = []  # one item: why it does not match
    error: str | None = None  # one item: why regenerating failed, if it did
    counts: VerifyCounts
    sample: int | None = None  # the sample size asked for, if any
    sample_seed: int | None = None  # the seed it was drawn with
    reason_counts: dict[str, int] = {}  # mismatches by reason field (text, weights_sha256, dtype, ...)
    mismatches: list[ItemMismatch] = []  # the first MISMATCHES_SHOWN, by item id
    url: str
