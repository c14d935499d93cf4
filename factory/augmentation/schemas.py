"""Request and report models for augmentation jobs. Strict, like every job request.

A job names a labelled dataset (inline rows, or a CSV / JSONL / Parquet file as
base64 content), the methods that make new rows (each with its ``k``), and the
quality filters that decide which of them reach the exported dataset.
"""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    field_validator,
    model_validator,
)

from factory.jobs.schemas import GenerationParams, dispatch_on
from factory.models.registry import ModelName

Scalar = StrictStr | StrictInt | StrictFloat | StrictBool | None
FieldName = Annotated[str, Field(min_length=1, max_length=128)]
Label = Annotated[str, Field(min_length=1, max_length=128)]

# The most variants per source row a per-row method may ask for, and new rows per label.
MAX_K_PER_ROW = 16
MAX_K_PER_LABEL = 1000


def _default_params() -> GenerationParams:
    # Paraphrases and new utterances are one short sentence: fewer tokens, more variety.
    return GenerationParams(max_new_tokens=48, temperature=0.7, top_p=0.9, repetition_penalty=1.1)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class DatasetSpec(_Strict):
    """The labelled source: ``rows`` inline, ``content`` (base64) in a ``format``, or ``file_id``, a
    file uploaded to ``/v1/files`` with purpose ``user_data``, in a ``format``.

    Parsing is by format over a byte stream (``factory.augmentation.sources``), so a
    stored file is read (streamed from storage) the same way as inline content.
    """

    rows: Annotated[list[dict[FieldName, Scalar]], Field(min_length=1)] | None = None
    content: Annotated[str, Field(min_length=1)] | None = None
    file_id: Annotated[str, Field(pattern=r"^file[-_][A-Za-z0-9_-]{1,64}$")] | None = None
    format: Literal["csv", "jsonl", "parquet"] | None = None
    text_field: FieldName = "text"
    label_field: FieldName = "label"
    # None numbers the rows (row-000001, ...) instead of reading an id column.
    id_field: FieldName | None = "id"

    @field_validator("rows")
    @classmethod
    def _finite_values(cls, rows: list[dict[str, Any]] | None) -> list[dict[str, Any]] | None:
        for i, row in enumerate(rows or []):
            for v in row.values():
                if isinstance(v, float) and not math.isfinite(v):
                    raise ValueError(f"dataset row {i} has a non-finite number")
        return rows

    @model_validator(mode="after")
    def _one_source(self) -> DatasetSpec:
        if sum(x is not None for x in (self.rows, self.content, self.file_id)) != 1:
            raise ValueError("give exactly one of 'rows', 'content' or 'file_id'")
        if self.rows is None and self.format is None:
            raise ValueError("'format' (csv, jsonl or parquet) is required with 'content' or 'file_id'")
        if self.rows is not None and self.format is not None:
            raise ValueError("'format' only applies to 'content' or 'file_id'")
        return self


# Per-row methods may take only the first ``max_rows`` rows: the LLM on a sample, EDA on all.
MaxRows = Annotated[int, Field(ge=1)] | None


class ParaphraseMethod(_Strict):
    """LLM paraphrase conditioned on the row's label: ``k`` rewrites per source row."""

    method: Literal["paraphrase"]
    k: int = Field(default=1, ge=1, le=MAX_K_PER_ROW)
    max_rows: MaxRows = None


class GenerateMethod(_Strict):
    """LLM generation of ``k`` new rows per label, from its description and ``shots`` seed rows."""

    method: Literal["generate"]
    k: int = Field(default=1, ge=1, le=MAX_K_PER_LABEL)
    shots: int = Field(default=4, ge=0, le=16)
    # "text": the model answers with the message; "json": with a {"text", "label"} record held to a JSON
    # schema by constrained decoding (the label fixed to the one asked for).
    output: Literal["text", "json"] = "text"


EdaOperation = Literal["synonym", "insert", "swap", "delete"]
NoiseOperation = Literal["keyboard", "transpose", "delete", "duplicate", "case"]


def _all_eda_operations() -> list[EdaOperation]:
    return ["synonym", "insert", "swap", "delete"]


def _all_noise_operations() -> list[NoiseOperation]:
    return ["keyboard", "transpose", "delete", "duplicate", "case"]


class EdaMethod(_Strict):
    """Rule-based EDA (Wei & Zou, 2019): one operation per variant, ``alpha`` of the words changed."""

    method: Literal["eda"]
    k: int = Field(default=1, ge=1, le=MAX_K_PER_ROW)
    max_rows: MaxRows = None
    alpha: float = Field(default=0.1, gt=0.0, le=0.5)
    operations: Annotated[list[EdaOperation], Field(min_length=1, max_length=4)] = Field(
        default_factory=_all_eda_operations)

    @model_validator(mode="after")
    def _distinct_operations(self) -> EdaMethod:
        if len(set(self.operations)) != len(self.operations):
            raise ValueError("operations must not repeat")
        return self


class CharNoiseMethod(_Strict):
    """Character-level noise for robustness sets: typos at ``rate`` per letter (at least one)."""

    method: Literal["char_noise"]
    k: int = Field(default=1, ge=1, le=MAX_K_PER_ROW)
    max_rows: MaxRows = None
    rate: float = Field(default=0.05, gt=0.0, le=0.3)
    operations: Annotated[list[NoiseOperation], Field(min_length=1, max_length=5)] = Field(
        default_factory=_all_noise_operations)

    @model_validator(mode="after")
    def _distinct_operations(self) -> CharNoiseMethod:
        if len(set(self.operations)) != len(self.operations):
            raise ValueError("operations must not repeat")
        if self.operations == ["case"]:
            raise ValueError("'case' alone only changes casing, which the filters treat as a copy; "
                             "add a typo operation")
        return self


METHOD_MODELS: dict[str, type[BaseModel]] = {
    "paraphrase": ParaphraseMethod, "generate": GenerateMethod, "eda": EdaMethod, "char_noise": CharNoiseMethod,
}
LLM_METHODS = frozenset({"paraphrase", "generate"})
RULE_METHODS = frozenset({"eda", "char_noise"})

MethodSpec = Annotated[ParaphraseMethod | GenerateMethod | EdaMethod | CharNoiseMethod,
                       dispatch_on("method", METHOD_MODELS)]


class SimilarityBand(_Strict):
    """Cosine similarity to the row's own source: above ``max`` is a copy, below ``min`` drifted."""

    min: float = Field(default=0.5, ge=-1.0, le=1.0)
    max: float = Field(default=0.98, ge=-1.0, le=1.0)

    @model_validator(mode="after")
    def _ordered(self) -> SimilarityBand:
        if not self.min < self.max:
            raise ValueError("min must be below max")
        return self


class FilterSpec(_Strict):
    """Quality filters, applied in this order; each one's acceptance rate is reported."""

    min_chars: int = Field(default=3, ge=1, le=10_000)
    max_chars: int = Field(default=500, ge=1, le=100_000)
    # Control characters, U+FFFD, private-use or unassigned code points, or no letter at all.
    charset: StrictBool = True
    # "Sure! Here is...", "Rewritten message:", "As an AI..." left in a model's answer.
    prompt_leftovers: StrictBool = True
    exact_duplicates: StrictBool = True
    similarity_band: SimilarityBand | None = Field(default_factory=SimilarityBand)
    # Nearest-centroid classifier over sentence embeddings of the source rows.
    label_check: Literal["none", "centroid"] = "none"
    # Cosine at or above this to another source row or to a kept output is a near duplicate.
    near_duplicate: Annotated[float, Field(gt=0.0, le=1.0)] | None = 0.95

    @model_validator(mode="after")
    def _bounds(self) -> FilterSpec:
        if self.min_chars > self.max_chars:
            raise ValueError("min_chars must not exceed max_chars")
        return self


class AugmentationJobCreate(_Strict):
    kind: Literal["augmentation"]
    dataset: DatasetSpec
    methods: Annotated[list[MethodSpec], Field(min_length=1, max_length=4)]
    # Label descriptions for the prompts (used by paraphrase and generate).
    labels: dict[Label, Annotated[str, Field(min_length=1, max_length=1000)]] = Field(default_factory=dict)
    filters: FilterSpec = Field(default_factory=FilterSpec)
    include_source: StrictBool = True
    task: Annotated[str, Field(pattern=r"^[a-z][a-z0-9-]{0,63}$")] = "text-classification"
    model: ModelName | None = None
    params: GenerationParams = Field(default_factory=_default_params)

    @field_validator("methods")
    @classmethod
    def _distinct_methods(cls, methods: list[Any]) -> list[Any]:
        names = [m.method for m in methods]
        if len(set(names)) != len(names):
            raise ValueError("each method may appear once (raise its k instead)")
        return methods


class DatasetFile(BaseModel):
    name: str
    bytes: int
    url: str


class DatasetFilesOut(BaseModel):
    job_id: str
    object: Literal["list"] = "list"
    data: list[DatasetFile]
