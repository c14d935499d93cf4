"""Request and response models for jobs. Strict: unknown fields and lax coercion are refused."""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import datetime
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    ValidatorFunctionWrapHandler,
    WrapValidator,
    create_model,
    field_validator,
)

Scalar = StrictStr | StrictInt | StrictFloat | StrictBool | None
# A job option: the upload a job's input came from (deleting that file erases what the job kept of it).
SOURCE_FILE = "source_file_id"


def dispatch_on(tag_field: str, models: Mapping[str, type[BaseModel]]) -> WrapValidator:
    """Validate a union by reading its tag first, then validating against that one model.

    Unlike pydantic's discriminated unions, error locations stay the plain field path
    (``methods[0].k``, not ``methods[0].eda.k``), and an unknown tag is a literal error
    on the tag field that lists the accepted values without echoing the submitted one.
    """
    tags = tuple(models)
    tag_model = create_model(f"{tag_field}_tag", **{tag_field: (Literal[tags], ...)})  # type: ignore[call-overload]

    def validate(value: Any, _handler: ValidatorFunctionWrapHandler) -> Any:
        if isinstance(value, tuple(models.values())):
            return value
        tag_model.model_validate(value)
        return models[value[tag_field]].model_validate(value)

    return WrapValidator(validate)


class GenerationParams(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    max_new_tokens: int = Field(default=96, ge=1, le=1024)
    # 0 means greedy decoding.
    temperature: float = Field(default=0.7, ge=0.0, le=2.0)
    top_p: float = Field(default=0.95, gt=0.0, le=1.0)
    repetition_penalty: float = Field(default=1.1, ge=1.0, le=2.0)
    seed: int | None = Field(default=None, ge=0, le=2**31 - 1)

    @field_validator("temperature", "top_p", "repetition_penalty", mode="before")
    @classmethod
    def _finite(cls, v: Any) -> Any:
        if isinstance(v, bool):
            raise ValueError("must be a number")
        if isinstance(v, int):
            return float(v)
        if isinstance(v, float) and not math.isfinite(v):
            raise ValueError("must be a finite number")
        return v


class ItemCounts(BaseModel):
    total: int
    pending: int
    succeeded: int
    failed: int
    cancelled: int


class JobOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    object: Literal["job"] = "job"
    kind: str
    status: str
    model: str
    variants: int
    seed: int
    params: dict[str, Any]
    template_sha256: str
    counts: ItemCounts
    chunk_count: int
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    results_url: str
