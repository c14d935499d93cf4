"""The personalization job's request: a template over an inline audience. Strict, like every body."""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from factory.config import SETTING_MAXIMUM_MARK
from factory.jobs.schemas import GenerationParams, Scalar
from factory.models.registry import ModelName

MAX_RECORD_FIELDS = 256


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
