"""Pipeline requests and responses. Strict: unknown fields and lax coercion are refused.

The job's ``request`` is the body a direct submission of that kind takes (``POST
/v1/campaigns``, ``POST /v1/jobs`` with ``kind: augmentation``, ``POST /v1/batches``); it is
validated against that kind's own model when the pipeline is saved (factory/pipelines/jobspec.py).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr, model_validator

Name = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9._-]{0,63}$")]
JobKindName = Literal["campaign", "augmentation", "batch"]
StepKindName = Literal["campaign", "augmentation", "batch", "export"]
Concurrency = Literal["skip", "queue", "cancel_previous"]
CatchUp = Literal["run_once", "skip"]
RUN_STATUSES = ("waiting", "queued", "running", "succeeded", "failed", "cancelled", "skipped")
FINAL_RUN_STATUSES = ("succeeded", "failed", "cancelled", "skipped")


class Schedule(BaseModel):
    """A cron expression (five fields) in an IANA time zone, or an interval in seconds."""

    model_config = ConfigDict(extra="forbid", strict=True)

    cron: Annotated[StrictStr, Field(min_length=1, max_length=120)] | None = None
    timezone: Annotated[StrictStr, Field(min_length=1, max_length=64)] | None = None
    every_seconds: Annotated[StrictInt, Field(ge=1, le=366 * 24 * 3600)] | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> Schedule:
        if (self.cron is None) == (self.every_seconds is None):
            raise ValueError("give either 'cron' (with an optional 'timezone') or 'every_seconds'")
        if self.timezone is not None and self.cron is None:
            raise ValueError("'timezone' applies to 'cron'")
        return self


class InputSource(BaseModel):
    """The file each run reads: a fixed one, the newest whose name starts with ``prefix``, or every file
    with that prefix that arrived since the last run (a cursor on the pipeline). Files are the tenant's
    uploads (``/v1/files``) of the purpose the job needs: ``batch`` for batches, ``user_data`` otherwise."""

    model_config = ConfigDict(extra="forbid", strict=True)

    source: Literal["file", "newest", "new_since_last_run"]
    file_id: Annotated[StrictStr, Field(pattern=r"^file[-_][A-Za-z0-9_-]{1,64}$")] | None = None
    prefix: Annotated[StrictStr, Field(min_length=1, max_length=255)] | None = None

    @model_validator(mode="after")
    def _matches_source(self) -> InputSource:
        if (self.source == "file") != (self.file_id is not None) or (self.source == "file") == (
                self.prefix is not None):
            raise ValueError("source 'file' takes 'file_id'; 'newest' and 'new_since_last_run' take 'prefix'")
        return self


class JobSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    kind: JobKindName
    request: dict[StrictStr, Any] = Field(default_factory=dict)


class StepSpec(BaseModel):
    """One step of a chained pipeline (factory/pipelines/steps.py). The first is a job as ``job`` is;
    each later one takes the previous step's output: ``batch`` (``request``: the ``POST /v1/batches``
    body, ``body``: each line's chat body, the previous text appended as the last user message) or
    ``export`` (``request``: ``{"prefix"}``, the output saved as a file whose name starts with it)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    kind: StepKindName
    request: dict[StrictStr, Any] = Field(default_factory=dict)
    body: dict[StrictStr, Any] | None = None


Steps = Annotated[list[StepSpec], Field(min_length=1, max_length=20)]


def _one_of_job_or_steps(job: JobSpec | None, steps: list[StepSpec] | None, required: bool) -> None:
    if job is not None and steps is not None:
        raise ValueError("give either 'job' (one step) or 'steps' (a chain), not both")
    if required and job is None and steps is None:
        raise ValueError("give 'job' (one step) or 'steps' (a chain)")


class PipelineSpec(BaseModel):
    """``POST /v1/pipelines``: create, or apply by name (the same spec again changes nothing).

    ``job`` is a one-step pipeline; ``steps`` chains steps (``job: X`` is the same as ``steps: [X]``)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    name: Name
    schedule: Schedule
    job: JobSpec | None = None
    steps: Steps | None = None
    input: InputSource | None = None
    enabled: StrictBool = True
    concurrency: Concurrency = "skip"
    catch_up: CatchUp = "run_once"
    webhook_url: Annotated[StrictStr, Field(min_length=1, max_length=2048)] | None = None

    @model_validator(mode="after")
    def _job_or_steps(self) -> PipelineSpec:
        _one_of_job_or_steps(self.job, self.steps, required=True)
        return self


class PipelineUpdate(BaseModel):
    """``PATCH /v1/pipelines/{id}``: the fields given replace the pipeline's (``null`` clears input or webhook;
    ``job`` or ``steps`` replaces every step: ``job`` makes it a one-step pipeline)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    schedule: Schedule | None = None
    job: JobSpec | None = None
    steps: Steps | None = None
    input: InputSource | None = None
    enabled: StrictBool | None = None
    concurrency: Concurrency | None = None
    catch_up: CatchUp | None = None
    webhook_url: Annotated[StrictStr, Field(min_length=1, max_length=2048)] | None = None

    @model_validator(mode="after")
    def _job_or_steps(self) -> PipelineUpdate:
        _one_of_job_or_steps(self.job, self.steps, required=False)
        return self


class Cursor(BaseModel):
    file_id: str
    created_at: datetime


class PipelineOut(BaseModel):
    id: str
    object: Literal["pipeline"] = "pipeline"
    name: str
    schedule: dict[str, Any]
    job: dict[str, Any]
    # Every step, the first being ``job`` ([job] for a one-step pipeline).
    steps: list[dict[str, Any]]
    input: dict[str, Any] | None
    enabled: bool
    concurrency: str
    catch_up: str
    webhook_url: str | None
    next_fire_at: datetime | None
    next_fire_times: list[datetime]
    cursor: Cursor | None
    created_at: datetime
    updated_at: datetime
    # Set by POST /v1/pipelines: what applying the spec did.
    applied: Literal["created", "updated", "unchanged"] | None = None


class PipelineList(BaseModel):
    object: Literal["list"] = "list"
    data: list[PipelineOut]


class RunJob(BaseModel):
    job_id: str
    batch_id: str | None = None
    file_id: str | None = None


class RunStep(BaseModel):
    """One step of a run, for one of its inputs (``lane``): what it started and how it went."""

    lane: int
    step: int
    kind: str
    status: str
    job_id: str | None = None
    batch_id: str | None = None
    input_file_id: str | None = None
    output_file_id: str | None = None
    counts: dict[str, int]
    error: str | None = None


class RunOut(BaseModel):
    id: str
    object: Literal["pipeline.run"] = "pipeline.run"
    pipeline_id: str
    slot_at: datetime
    trigger: str
    status: str
    jobs: list[RunJob]
    # Every step started so far, by lane then step (one lane per input file).
    steps: list[RunStep]
    counts: dict[str, int]
    missed: int
    error: str | None
    fired_at: datetime
    started_at: datetime | None
    finished_at: datetime | None


class RunList(BaseModel):
    object: Literal["list"] = "list"
    data: list[RunOut]
    has_more: bool
