"""Campaign requests and responses. Strict: unknown fields and lax coercion are refused."""

from __future__ import annotations

import math
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictFloat, StrictInt, StrictStr, model_validator

from factory.channels.specs import ChannelName
from factory.models.registry import ModelName

Scalar = StrictStr | StrictInt | StrictFloat | StrictBool | None
Name = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9._-]{0,63}$")]
FieldName = Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")]
Column = Annotated[str, Field(min_length=1, max_length=128)]


class AudienceSource(BaseModel):
    """Where the recipients come from: inline records, the text (or base64 bytes) of a CSV/JSONL
    file, or a file uploaded to ``/v1/files`` with purpose ``user_data`` (``file_id``).

    All three go through the same parser and checks; a stored file is streamed from
    object storage as it is parsed, never loaded whole.
    """

    model_config = ConfigDict(extra="forbid", strict=True)

    format: Literal["records", "csv", "jsonl"]
    records: Annotated[list[dict[Column, Scalar]], Field(min_length=1)] | None = None
    data: Annotated[str, Field(min_length=1)] | None = None
    encoding: Literal["text", "base64"] = "text"  # of ``data``
    file_id: Annotated[str, Field(pattern=r"^file[-_][A-Za-z0-9_-]{1,64}$")] | None = None
    key_column: Column = "id"
    # Record field (as templates and merge tags name it) -> column in the file.
    columns: Annotated[dict[FieldName, Column], Field(max_length=128)] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _one_source(self) -> AudienceSource:
        given = [name for name in ("records", "data", "file_id") if getattr(self, name) is not None]
        if len(given) != 1 or (self.format == "records") != (given[0] == "records"):
            raise ValueError("give 'records' with format 'records', or 'data' or 'file_id' with format "
                             "'csv' or 'jsonl'")
        if self.file_id is not None and "encoding" in self.model_fields_set:
            raise ValueError("'encoding' applies to 'data', not to 'file_id'")
        return self


class MessageSpec(BaseModel):
    """One channel of the campaign: its template, how many variants, an optional control."""

    model_config = ConfigDict(extra="forbid", strict=True)

    channel: ChannelName
    template: Name
    template_version: Annotated[int, Field(ge=1)] | None = None  # None: the latest, pinned at submit
    variants: int = Field(default=1, ge=1, le=8)
    # How the main field starts (e.g. "Hi {{first_name}},"); the model continues it.
    opening: Annotated[str, Field(min_length=1, max_length=200)] | None = None
    # A human-written variant (field -> text), carried through untouched.
    control: Annotated[dict[Annotated[str, Field(max_length=32)], Annotated[str, Field(max_length=5000)]],
                       Field(max_length=16)] | None = None
    sms_max_segments: int = Field(default=1, ge=1, le=10)
    # Recipient fields the copy must use (recipient mode; each one a variable of the template, so the
    # model sees it): a copy that does not mention one fails the check personalization:<field>.
    personalize_with: Annotated[list[FieldName], Field(max_length=8)] = Field(default_factory=list)


class SamplingParams(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    temperature: float = Field(default=0.5, ge=0.0, le=2.0)
    top_p: float = Field(default=0.9, gt=0.0, le=1.0)
    repetition_penalty: float = Field(default=1.1, ge=1.0, le=2.0)
    seed: int | None = Field(default=None, ge=0, le=2**31 - 1)

    @model_validator(mode="after")
    def _finite(self) -> SamplingParams:
        for v in (self.temperature, self.top_p, self.repetition_penalty):
            if not math.isfinite(v):
                raise ValueError("parameters must be finite numbers")
        return self


class CampaignCreate(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    name: Annotated[str, Field(min_length=1, max_length=120)]
    brand: Name
    brand_version: Annotated[int, Field(ge=1)] | None = None
    audience: AudienceSource
    messages: Annotated[list[MessageSpec], Field(min_length=1, max_length=5)]
    # Generate once per segment (recipients sharing these fields) instead of once per recipient.
    segment_by: Annotated[list[FieldName], Field(min_length=1, max_length=5)] | None = None
    # Fields filled into {{tags}} per recipient after generation.
    merge_tags: Annotated[list[FieldName], Field(max_length=16)] = Field(default_factory=list)
    # The merge tag holding the recipient's name: a "[Name]" the model leaves becomes it.
    name_tag: FieldName | None = None
    language: Annotated[str, Field(pattern=r"^[a-z]{2}$")] | None = "en"
    max_attempts: int = Field(default=3, ge=1, le=8)
    # How each copy is asked for: "fields" (one request per field, its answer prefilled with the
    # field's label) or "json" (one JSON-schema-constrained request for every field of the copy).
    generation: Literal["fields", "json"] = "fields"
    model: ModelName | None = None
    params: SamplingParams = Field(default_factory=SamplingParams)


class VariantOut(BaseModel):
    variant_id: str
    channel: str
    control: bool


class CampaignOut(BaseModel):
    object: Literal["campaign"] = "campaign"
    id: str
    name: str
    status: str
    mode: Literal["recipient", "segment"]
    recipients: int
    segments: int | None
    variants: list[VariantOut]
    counts: dict[str, int]
    templates: list[dict[str, Any]]
    brand: dict[str, Any]
    created_at: datetime
    finished_at: datetime | None
    report_url: str
    exports: dict[str, str]
