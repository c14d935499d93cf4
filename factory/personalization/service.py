"""The personalization kind: a template rendered over every record of an inline audience.

Takes a session, never commits: the caller owns the transaction. Shared with batch files,
whose ``/v1/personalize`` lines carry this same body (``render_audience``).
"""

from __future__ import annotations

import secrets

from sqlalchemy.orm import Session

from factory.config import Settings
from factory.errors import InvalidInput
from factory.jobs.service import CreatedJob
from factory.jobs.writer import JobWriter
from factory.models import registry
from factory.personalization.schemas import JobCreate
from factory.provenance.hashing import canonical_json, derive_seed, sha256_text
from factory.templates import budget
from factory.templates.sandbox import CompiledTemplate, compile_template


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
