"""The rules for jobs. Takes a session, never commits: the caller owns the transaction."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from sqlalchemy.orm import Session

from factory.config import Settings
from factory.db.models import Item, ItemState, Job, JobStatus
from factory.errors import Conflict, InvalidInput, NotFound
from factory.jobs import execution
from factory.jobs.repository import JobRepository
from factory.jobs.schemas import ItemCounts, JobCreate, JobOut
from factory.jobs.writer import JobWriter
from factory.models import registry
from factory.provenance.hashing import canonical_json, derive_seed, sha256_text
from factory.templates import budget
from factory.templates.sandbox import CompiledTemplate, compile_template


@dataclass(frozen=True)
class CreatedJob:
    job: Job
    outbox_ids: list[str]


def _validate_audience(body: JobCreate, settings: Settings, variables: frozenset[str]) -> tuple[list[str], int]:
    """Check limits, keys and template variables for every record; return the recipient keys and the
    records' size in bytes (of their canonical JSON)."""
    if len(body.audience) > settings.max_audience:
        raise InvalidInput(f"audience has more than {settings.max_audience} records", field="audience")
    if len(body.audience) * body.variants > settings.max_audience * settings.max_variants:
        raise InvalidInput("audience x variants is over the job size limit", field="variants")
    if body.variants > settings.max_variants:
        raise InvalidInput(f"variants must be at most {settings.max_variants}", field="variants")
    keys: list[str] = []
    seen: set[str] = set()
    record_bytes = 0
    for i, record in enumerate(body.audience):
        size = len(canonical_json(record))
        record_bytes += size
        if size > settings.max_record_chars:
            raise InvalidInput(f"audience[{i}] is larger than {settings.max_record_chars} characters",
                               field=f"audience[{i}]")
        missing = sorted(variables - record.keys())
        if missing:
            raise InvalidInput(f"audience[{i}] lacks template variable(s): {', '.join(missing)}",
                               field=f"audience[{i}]")
        raw_key = record.get(body.key_field)
        if raw_key is None or isinstance(raw_key, bool) or raw_key == "":
            raise InvalidInput(f"audience[{i}] has no value for key field '{body.key_field}'",
                               field=f"audience[{i}].{body.key_field}")
        key = str(raw_key)
        if len(key) > 256:
            raise InvalidInput(f"audience[{i}] key is longer than 256 characters", field=f"audience[{i}]")
        if key in seen:
            raise InvalidInput(f"audience[{i}] repeats a recipient key used earlier", field=f"audience[{i}]")
        seen.add(key)
        keys.append(key)
    return keys, record_bytes


def render_audience(settings: Settings, body: JobCreate) -> tuple[CompiledTemplate, list[str], list[str]]:
    """Compile the template, check every record and render every prompt: (template, keys, prompts).

    Shared with batch files, whose /v1/personalize lines carry this same body. Rendering counts
    against the budget bound by the caller, else one of its own (``factory.templates.budget``);
    the prompts may total at most ``template_max_amplification`` times the template and records.
    """
    if len(body.template) > settings.max_template_chars:
        raise InvalidInput(f"template is longer than {settings.max_template_chars} characters", field="template")
    template = compile_template(body.template)
    keys, record_bytes = _validate_audience(body, settings, template.variables)
    with budget.bound(budget.current() or budget.RenderBudget.from_settings(settings)):
        prompts = [template.render(rec, field=f"audience[{i}]") for i, rec in enumerate(body.audience)]
    budget.check_amplification(settings, sum(len(p.encode()) for p in prompts),
                               len(body.template.encode()) + record_bytes, field="template")
    return template, keys, prompts


def create_job(session: Session, settings: Settings, tenant_id: str, body: JobCreate) -> CreatedJob:
    """Validate everything, then write the job, its chunks, items and outbox messages.

    Either all rows are written (in the caller's transaction) or an InvalidInput is
    raised before anything is; prompts are rendered here so a bad record fails the
    submit, not a worker at 3 a.m.
    """
    model = registry.resolve(body.model or settings.model, settings.model_allowlist).name
    template, keys, prompts = render_audience(settings, body)

    params = body.params.model_dump()
    job_seed = params.pop("seed")
    if job_seed is None:
        job_seed = secrets.randbelow(2**31)
    writer = JobWriter(session, settings, tenant_id=tenant_id, kind=body.kind, model=model,
                       queue=settings.queue_for_model(model), params=params, seed=job_seed,
                       template=body.template, template_sha256=template.sha256, system_prompt=body.system_prompt,
                       variants=body.variants)
    for record, key, prompt in zip(body.audience, keys, prompts, strict=True):
        prompt_sha = sha256_text(prompt)
        for variant in range(body.variants):
            writer.add(key=key, variant=variant, record=record, prompt=prompt, prompt_sha256=prompt_sha,
                       request=None, seed=derive_seed(job_seed, key, variant))
    outbox_ids = writer.finish()
    return CreatedJob(job=writer.job, outbox_ids=outbox_ids)


def get_job(session: Session, tenant_id: str, job_id: str) -> Job:
    job = JobRepository(session).get(tenant_id, job_id)
    if job is None:
        raise NotFound("no such job", field="job_id")
    return job


def describe(session: Session, job: Job) -> JobOut:
    counts = JobRepository(session).item_counts(job.id)
    return JobOut(
        id=job.id, kind=job.kind, status=job.status.value, model=job.model, variants=job.variants,
        seed=job.seed, params=job.params, template_sha256=job.template_sha256,
        counts=ItemCounts(
            total=job.item_count,
            pending=counts.get(ItemState.PENDING, 0),
            succeeded=counts.get(ItemState.SUCCEEDED, 0),
            failed=counts.get(ItemState.FAILED, 0),
            cancelled=counts.get(ItemState.CANCELLED, 0),
        ),
        chunk_count=job.chunk_count, created_at=job.created_at, started_at=job.started_at,
        finished_at=job.finished_at, results_url=f"/v1/jobs/{job.id}/results",
    )


def cancel_job(session: Session, tenant_id: str, job_id: str) -> tuple[Job, list[str]]:
    """Stop what has not started; running chunks finish and keep their results.

    Returns the job and the outbox ids to relay after commit (its finalize task,
    when nothing is left running).
    """
    repo = JobRepository(session)
    job = get_job(session, tenant_id, job_id)
    job = repo.get_for_update(job.id) or job
    if job.status in (JobStatus.CANCELLING, JobStatus.CANCELLED):
        return job, []
    if job.status.is_terminal or job.status == JobStatus.FINALIZING:
        raise Conflict(f"job is already {job.status.value}", field="job_id")
    repo.cancel_pending(job.id)
    repo.request_cancel(job.id)
    outbox_ids = execution.request_finalization(session, job.id)
    session.refresh(job)
    return job, outbox_ids


def result_line(item: Item, job: Job) -> dict[str, Any]:
    """One JSONL line: the text (or error) with its recipient key and provenance."""
    line = {
        "job_id": job.id,
        "item_id": item.id,
        "key": item.key,
        "variant": item.variant,
        "status": item.state.value,
        "text": item.text,
        "error": item.error,
        "provenance": item.provenance,
    }
    if item.check_status is not None:  # campaign copy: its fields and how its checks went
        line.update(fields=item.fields, check_status=item.check_status, failed_checks=item.failed_checks)
    return line


def iter_results(session: Session, job: Job) -> Iterator[str]:
    for item in JobRepository(session).iter_finished_items(job.id):
        yield canonical_json(result_line(item, job)) + "\n"
