"""The rules for pipelines. Takes a session, never commits: the caller owns the transaction.

Everything a pipeline will do at 06:00 is checked when it is saved: the schedule (cron syntax,
time zone, interval), the webhook URL, the input (the file exists, or some file has the prefix)
and the job itself, rehearsed by the kind's own create function against that input
(factory/pipelines/jobspec.py). Bad input is a 4xx naming the field, and nothing is saved.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from factory.config import Settings
from factory.db.base import new_id, utcnow
from factory.db.models import Pipeline
from factory.errors import Conflict, FactoryError, InvalidInput, NotFound
from factory.pipelines import firing, jobspec, schedule, steps
from factory.pipelines.firing import AlreadyFired, Fired, Slot
from factory.pipelines.repository import PipelineRepository
from factory.pipelines.runs import describe as describe_run
from factory.pipelines.schemas import Cursor, PipelineOut, PipelineSpec, PipelineUpdate, RunList
from factory.pipelines.steps import check_first
from factory.storage import ObjectStore
from factory.webhooks.delivery import check_url

# Pause and resume re-read and retry this often when a firing bumped the revision meanwhile.
TOGGLE_ATTEMPTS = 5
# The stored form of a spec: what apply compares and PATCH replaces.
FIELDS = ("schedule", "job", "chain", "input", "enabled", "concurrency", "catch_up", "webhook_url")


def _stored(spec: PipelineSpec | PipelineUpdate) -> dict[str, Any]:
    """The spec as stored: ``steps`` is kept as its first step (``job``) and the ``chain`` after it, so
    ``job: X`` and ``steps: [X]`` are the same pipeline (and a one-step pipeline is stored as before)."""
    named = set(spec.model_fields_set) if isinstance(spec, PipelineUpdate) else set(FIELDS) | {"steps"}
    values = spec.model_dump(include=named & (set(FIELDS) | {"steps"}))
    steps = values.pop("steps", None)
    if steps is not None:
        first = steps[0]
        check_first(first["kind"], first.pop("body"))
        values["job"], values["chain"] = first, steps[1:] or None
    elif values.get("job") is not None:
        values["chain"] = None
    if values.get("chain"):
        values["chain"] = [{k: v for k, v in step.items() if v is not None} for step in values["chain"]]
    if values.get("schedule") is not None:
        given = {k: v for k, v in values["schedule"].items() if v is not None}
        values["schedule"] = {**given, "timezone": given.get("timezone") or "UTC"} if "cron" in given else given
    if values.get("input") is not None:
        values["input"] = {k: v for k, v in values["input"].items() if v is not None}
    return values


def _check(session: Session, settings: Settings, store: ObjectStore, tenant_id: str,
           values: dict[str, Any]) -> None:
    """Every save-time check of the whole stored spec (see the module)."""
    schedule.check(values["schedule"], settings.pipeline_min_interval_s)
    if values["webhook_url"] is not None:
        check_url(values["webhook_url"], settings)
    kind, request = values["job"]["kind"], values["job"]["request"]
    chained = bool(values["chain"])
    try:
        file_id = _sample_input(session, tenant_id, kind, values["input"])
        jobspec.rehearse(settings, store, tenant_id, kind, request, file_id)
    except FactoryError as exc:  # a chain's first step is steps[0]
        raise steps.renamed(exc, "job.", "steps[0].") if chained else exc from None
    if chained:
        steps.check(settings, kind, values["chain"])


def _sample_input(session: Session, tenant_id: str, kind: str, source: dict[str, Any] | None) -> str | None:
    """The file a run would read if it fired now (a prefix must already match a file)."""
    if source is None:
        if kind == "batch":
            raise InvalidInput("a batch pipeline needs an input: the batch files it runs", field="input")
        return None
    if source["source"] == "file":
        return str(source["file_id"])
    purpose = jobspec.KINDS[kind].purpose
    found = PipelineRepository(session).files(tenant_id, source["prefix"], purpose, newest_first=True, limit=1)
    if not found:
        raise NotFound(f"no '{purpose}' file's name starts with this prefix: upload one first (/v1/files)",
                       field="input.prefix")
    return found[0].id


def apply(session: Session, settings: Settings, store: ObjectStore, tenant_id: str,
          spec: PipelineSpec) -> tuple[Pipeline, str]:
    """Create the pipeline, or bring the one of that name to ``spec``: ("created" | "updated" | "unchanged")."""
    values = _stored(spec)
    repo = PipelineRepository(session)
    existing = repo.by_name(tenant_id, spec.name)
    if existing is not None and all(getattr(existing, name) == values[name] for name in FIELDS):
        return existing, "unchanged"
    _check(session, settings, store, tenant_id, values)
    if existing is not None:
        return _replace(session, existing, values), "updated"
    now = utcnow()
    pipeline = Pipeline(id=new_id("pipe"), tenant_id=tenant_id, name=spec.name, revision=0, created_at=now,
                        updated_at=now, **values)
    pipeline.next_fire_at = schedule.next_after(pipeline.schedule, now) if pipeline.enabled else None
    repo.add(pipeline)
    return pipeline, "created"


def update(session: Session, settings: Settings, store: ObjectStore, tenant_id: str, pipeline_id: str,
           body: PipelineUpdate) -> Pipeline:
    pipeline = get(session, tenant_id, pipeline_id)
    changes = _stored(body)
    values = {name: changes.get(name, getattr(pipeline, name)) for name in FIELDS}
    for name in ("schedule", "job", "enabled", "concurrency", "catch_up"):  # (steps: at least one, by its schema)
        if values[name] is None:
            raise InvalidInput(f"{name} cannot be null", field=name)
    if set(changes) - {"enabled", "concurrency", "catch_up"}:
        _check(session, settings, store, tenant_id, values)
    return _replace(session, pipeline, values)


def _replace(session: Session, pipeline: Pipeline, values: dict[str, Any]) -> Pipeline:
    """Write ``values`` under the compare-and-set (a 409 if a firing or another edit got there first)."""
    now = utcnow()
    extra: dict[str, Any] = {"updated_at": now}
    if values["schedule"] != pipeline.schedule or values["enabled"] != pipeline.enabled:
        extra["next_fire_at"] = schedule.next_after(values["schedule"], now) if values["enabled"] else None
    if values["input"] != pipeline.input:
        extra["cursor_created_at"] = extra["cursor_file_id"] = None  # a new input starts from its beginning
    if not PipelineRepository(session).claim(pipeline.id, pipeline.revision, **values, **extra):
        raise Conflict("the pipeline changed meanwhile (it fired, or another edit); retry", field="pipeline_id")
    session.refresh(pipeline)
    return pipeline


def set_enabled(session: Session, settings: Settings, tenant_id: str, pipeline_id: str, enabled: bool) -> Pipeline:
    """Pause (no slot fires; runs already started go on) or resume (from the next slot after now).

    A firing that bumps the revision between the read and the write does not refuse the request (the
    caller's intent does not depend on what the firing changed): it is read again and retried."""
    pipeline = get(session, tenant_id, pipeline_id)
    for _ in range(TOGGLE_ATTEMPTS - 1):
        try:
            return _set_enabled_once(session, pipeline, enabled)
        except Conflict:
            session.refresh(pipeline)
    return _set_enabled_once(session, pipeline, enabled)


def _set_enabled_once(session: Session, pipeline: Pipeline, enabled: bool) -> Pipeline:
    if pipeline.enabled == enabled:
        return pipeline
    return _replace(session, pipeline, {name: getattr(pipeline, name) for name in FIELDS} | {"enabled": enabled})


def delete(session: Session, tenant_id: str, pipeline_id: str) -> None:
    """The pipeline and its run history; the jobs its runs started stay (they are the tenant's jobs)."""
    PipelineRepository(session).delete(get(session, tenant_id, pipeline_id))


def run_now(session: Session, settings: Settings, store: ObjectStore, tenant_id: str, pipeline_id: str) -> Fired:
    """Fire now, outside the schedule (paused pipelines too), under the concurrency policy; a job that
    cannot be written is the caller's 4xx, and nothing is written."""
    pipeline = get(session, tenant_id, pipeline_id)
    try:
        return firing.fire(session, settings, store, pipeline, Slot(utcnow(), "manual"))
    except AlreadyFired:
        raise Conflict("the pipeline is firing right now; retry", field="pipeline_id") from None
    except firing.StartFailed as failed:
        raise failed.error from None


# --- reading -------------------------------------------------------------------
def list_pipelines(session: Session, tenant_id: str) -> list[Pipeline]:
    return PipelineRepository(session).for_tenant(tenant_id)


def get(session: Session, tenant_id: str, pipeline_id: str) -> Pipeline:
    pipeline = PipelineRepository(session).get(tenant_id, pipeline_id)
    if pipeline is None:
        raise NotFound("no such pipeline", field="pipeline_id")
    return pipeline


def describe(pipeline: Pipeline, applied: str | None = None) -> PipelineOut:
    cursor = None
    if pipeline.cursor_file_id is not None and pipeline.cursor_created_at is not None:
        cursor = Cursor(file_id=pipeline.cursor_file_id, created_at=pipeline.cursor_created_at)
    upcoming: list[datetime] = schedule.upcoming(pipeline.schedule, pipeline.next_fire_at)
    return PipelineOut(id=pipeline.id, name=pipeline.name, schedule=pipeline.schedule, job=pipeline.job,
                       steps=[pipeline.job, *(pipeline.chain or [])], input=pipeline.input,
                       enabled=pipeline.enabled, concurrency=pipeline.concurrency,
                       catch_up=pipeline.catch_up, webhook_url=pipeline.webhook_url,
                       next_fire_at=pipeline.next_fire_at, next_fire_times=upcoming, cursor=cursor,
                       created_at=pipeline.created_at, updated_at=pipeline.updated_at,
                       applied=applied)  # type: ignore[arg-type]


def list_runs(session: Session, tenant_id: str, pipeline_id: str, *, before: str | None, limit: int) -> RunList:
    pipeline = get(session, tenant_id, pipeline_id)
    repo = PipelineRepository(session)
    cursor = None
    if before is not None:
        cursor = repo.get_run(before)
        if cursor is None or cursor.pipeline_id != pipeline.id:
            raise NotFound("before does not name a run of this pipeline", field="before")
    rows = repo.runs(pipeline.id, before=cursor, limit=limit)
    return RunList(data=[describe_run(session, r) for r in rows[:limit]], has_more=len(rows) > limit)
