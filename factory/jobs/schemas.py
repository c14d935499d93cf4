"""Request and response models for jobs. Strict: unknown fields and lax coercion are refused."""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import datetime
from typing import Annotated, Any, Literal

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

from factory.config import SETTING_MAXIMUM_MARK
from factory.models.registry import ModelName

Scalar = StrictStr | StrictInt | StrictFloat | StrictBool | None
MAX_RECORD_FIELDS = 256


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


class JobCreate(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    kind: Literal["personalization"]
    template: Annotated[str, Field(min_length=1, max_length=100_000)]
    system_prompt: Annotated[str, Field(max_length=20_000)] | None = None
    # The count is checked against ``max_audience`` (a setting) by the service; a record holds at most
    # MAX_RECORD_FIELDS fields (and ``max_record_chars`` in all).
    audience: Annotated[list[Annotated[dict[Annotated[str, Field(max_length=128)], Scalar],
                                       Field(max_length=MAX_RECORD_FIELDS)]], Field(min_length=1)]
    key_field: Annotated[str, Field(min_length=1, max_length=128)] = "id"
    variants: int = Field(default=1, ge=1, le=64, json_schema_extra={SETTING_MAXIMUM_MARK: "max_variants"})
    model: ModelName | None = None
    params: GenerationParams = Field(default_factory=GenerationParams)

    @field_validator("audience")
    @classmethod
    def _finite_values(cls, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
        for i, rec in enumerate(records):
            for v in rec.values():
                if isinstance(v, float) and not math.isfinite(v):
                    raise ValueError(f"record {i} has a non-finite number")
                if isinstance(v, str) and "\x00" in v:
                    raise ValueError(f"record {i} has a NUL character")
        return records


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
