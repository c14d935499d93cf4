"""Request and response models of the Batch API, field for field as the OpenAI SDK's ``Batch``.

``progress`` is ours (the SDK keeps unknown fields); so is ``webhook_url`` on create
(the SDK sends it with ``extra_body``).
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr

from factory.metadata import Metadata

# A batch in one of these statuses is done: its webhook fires, watchers stop.
FINAL_STATUSES = ("completed", "failed", "cancelled", "expired")


class OutputExpiresAfter(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    anchor: Literal["created_at"]
    seconds: StrictInt = Field(ge=3600, le=2_592_000)


class BatchCreate(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    input_file_id: Annotated[StrictStr, Field(min_length=1, max_length=64)]
    endpoint: Literal["/v1/chat/completions", "/v1/personalize", "/v1/augment"]  # batches.lines.SUPPORTED_URLS
    completion_window: Literal["24h"]
    metadata: Metadata | None = None
    # Accepted for compatibility; generated files are kept until deleted.
    output_expires_after: OutputExpiresAfter | None = None
    webhook_url: Annotated[StrictStr, Field(min_length=1, max_length=2048)] | None = None


class RequestCounts(BaseModel):
    total: int
    completed: int
    failed: int


class BatchError(BaseModel):
    code: str | None
    message: str | None
    param: str | None
    line: int | None


class BatchErrors(BaseModel):
    object: Literal["list"] = "list"
    data: list[BatchError]


class Progress(BaseModel):
    """Items (a line with n > 1 or an audience is several) done so far, the rate and the time left."""

    items_total: int
    items_done: int
    items_per_second: float | None
    eta_seconds: float | None


class BatchUsage(BaseModel):
    input_tokens: int
    input_tokens_details: dict[str, int]
    output_tokens: int
    output_tokens_details: dict[str, int]
    total_tokens: int


class BatchOut(BaseModel):
    id: str
    object: Literal["batch"] = "batch"
    endpoint: str
    model: str | None
    errors: BatchErrors | None
    input_file_id: str
    completion_window: str
    status: str
    output_file_id: str | None
    error_file_id: str | None
    created_at: int
    in_progress_at: int | None
    expires_at: int | None
    finalizing_at: int | None
    completed_at: int | None
    failed_at: int | None
    expired_at: int | None
    cancelling_at: int | None
    cancelled_at: int | None
    request_counts: RequestCounts
    metadata: dict[str, str] | None
    usage: BatchUsage | None
    progress: Progress | None


class BatchList(BaseModel):
    object: Literal["list"] = "list"
    data: list[BatchOut]
    first_id: str | None
    last_id: str | None
    has_more: bool
