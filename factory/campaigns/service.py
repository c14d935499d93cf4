"""Campaign rules: validate everything, plan, then write the job. Never commits.

A campaign becomes one job of kind ``personalization``: items are (recipient,
variant) pairs, or (segment, variant) pairs in segment mode, where recipients who
share the ``segment_by`` fields share one generation and their own values are
filled into merge tags afterwards. Nothing is written until every check passed:
templates and brand resolve, variables exist, every row parses, keys are unique,
controls pass the channel's checks.
"""

from __future__ import annotations

import dataclasses
import io
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.orm import Session

from factory.brands import service as brands_service
from factory.campaigns import audience as aud
from factory.campaigns.plan import CAMPAIGN_KIND, CampaignPlan, MessagePlan, PinnedBrand, PinnedTemplate, VariantPlan
from factory.campaigns.repository import CampaignRepository
from factory.campaigns.schemas import AudienceSource, CampaignCreate, CampaignOut, MessageSpec, VariantOut
from factory.campaigns.variants import angle_for
from factory.channels.checks import check_copy
from factory.channels.specs import channel
from factory.channels.text import MERGE_TAG, normalise_merge_tags
from factory.config import Settings
from factory.db.base import new_id
from factory.db.models import Job, JobStatus, PromptTemplate
from factory.errors import Conflict, InvalidInput, NotFound
from factory.files import service as files_service
from factory.jobs.repository import JobRepository
from factory.jobs.schemas import SOURCE_FILE
from factory.jobs.writer import JobWriter
from factory.models import registry
from factory.provenance.hashing import canonical_json, derive_seed, sha256_text
from factory.storage import ObjectStore
from factory.storage.keys import CAMPAIGN_EXPORT_FORMATS, campaign_audience_key, campaign_export_key
from factory.templates import budget
from factory.templates import service as templates_service
from factory.templates.sandbox import CompiledTemplate, compile_template


@dataclass(frozen=True)
class CreatedCampaign:
    job: Job
    outbox_ids: list[str]


@dataclass
class Unit:
    """What one generation is for: a recipient, or a segment of recipients."""

    key: str
    values: dict[str, Any]  # the fields the prompt may use
    merge: dict[str, Any]  # merge-tag values (a segment: each tag's longest value, the worst case)
    recipients: int = 1
    record: dict[str, Any] = field(default_factory=dict)


def _tags(text: str | None) -> set[str]:
    return {m.group(1) for m in MERGE_TAG.finditer(text or "")}


def _pin_templates(session: Session, tenant_id: str, body: CampaignCreate) -> list[PromptTemplate]:
    pinned = []
    channels = [m.channel for m in body.messages]
    if len(set(channels)) != len(channels):
        raise InvalidInput("each channel may appear once in messages", field="messages")
    for i, msg in enumerate(body.messages):
        try:
            t = templates_service.get_template(session, tenant_id, msg.template, msg.template_version)
        except NotFound:
            raise InvalidInput("unknown template (or version)", field=f"messages[{i}].template") from None
        if t.channel is not None and t.channel != msg.channel:
            raise InvalidInput(f"template is for channel '{t.channel}', not '{msg.channel}'",
                               field=f"messages[{i}].template")
        pinned.append(t)
    return pinned


def _field_types(body: CampaignCreate, templates: list[PromptTemplate]) -> dict[str, str]:
    types: dict[str, str] = {}
    for i, t in enumerate(templates):
        for name, kind in t.variables.items():
            if types.setdefault(name, kind) != kind:
                raise InvalidInput(f"templates declare variable '{name}' with different types",
                                   field=f"messages[{i}].template")
    for name in [*body.merge_tags, *(body.segment_by or [])]:
        types.setdefault(name, "string")
    return types


def _check_fields(body: CampaignCreate, templates: list[PromptTemplate],
                  compiled: list[CompiledTemplate]) -> None:
    tags = set(body.merge_tags)
    if body.name_tag is not None and body.name_tag not in tags:
        raise InvalidInput("name_tag must be one of merge_tags", field="name_tag")
    for i, (msg, c) in enumerate(zip(body.messages, compiled, strict=True)):
        unknown = _tags(msg.opening) - tags
        if unknown:
            raise InvalidInput(f"opening uses {{{{{sorted(unknown)[0]}}}}}, which is not a merge tag",
                               field=f"messages[{i}].opening")
        if body.segment_by is not None:
            outside = sorted(c.variables - set(body.segment_by))
            if outside:
                raise InvalidInput(
                    f"in segment mode a template may use only segment_by fields; '{outside[0]}' is not one "
                    "(per-recipient values belong in merge tags)", field=f"messages[{i}].template")
        if msg.personalize_with:
            if body.segment_by is not None:
                raise InvalidInput("personalize_with needs one copy per recipient: it does not apply in "
                                   "segment mode", field=f"messages[{i}].personalize_with")
            unseen = sorted(set(msg.personalize_with) - c.variables)
            if unseen:
                raise InvalidInput(f"personalize_with names '{unseen[0]}', which the template does not use: "
                                   "the model would never see it", field=f"messages[{i}].personalize_with")
        if msg.control is not None:
            spec = channel(msg.channel)
            if set(msg.control) != set(spec.field_names):
                raise InvalidInput(f"control must have exactly the fields {', '.join(spec.field_names)}",
                                   field=f"messages[{i}].control")
            for name, text in msg.control.items():
                if _tags(text) - tags:
                    raise InvalidInput("control uses a tag that is not a merge tag",
                                       field=f"messages[{i}].control.{name}")


def _units(recipients: Iterator[aud.Recipient], body: CampaignCreate, sink: io.BytesIO,
           settings: Settings) -> tuple[list[Unit], int]:
    """Stream recipients into the stored audience; return the units to generate for and the count."""
    segment_by = body.segment_by
    units: dict[str, Unit] = {}
    count = 0
    for r in recipients:
        count += 1
        merge = {t: r.fields[t] for t in body.merge_tags}
        if segment_by is None:
            units[r.key] = Unit(key=r.key, values=r.fields, merge=merge, record=r.fields)
            seg = None
        else:
            values = {f: r.fields[f] for f in segment_by}
            seg = "seg-" + sha256_text(canonical_json(values))[:16]
            unit = units.get(seg)
            if unit is None:
                if len(units) >= settings.max_audience:
                    raise InvalidInput(f"audience has more than {settings.max_audience} segments", field="segment_by")
                unit = units[seg] = Unit(key=seg, values=values, merge=dict(merge), recipients=0)
            unit.recipients += 1
            for t, v in merge.items():
                if len(str(v)) > len(str(unit.merge[t])):
                    unit.merge[t] = v
        sink.write((canonical_json({"key": r.key, "segment": seg, "merge": merge}) + "\n").encode())
    for unit in units.values():
        if segment_by is not None:
            unit.record = {"segment": unit.values, "recipients": unit.recipients}
    return list(units.values()), count


def _worst_merge(units: list[Unit], tags: list[str]) -> dict[str, str]:
    worst: dict[str, str] = {t: "" for t in tags}
    for u in units:
        for t in tags:
            if len(str(u.merge.get(t, ""))) > len(worst[t]):
                worst[t] = str(u.merge[t])
    return worst


def _check_controls(plan: CampaignPlan, units: list[Unit]) -> None:
    worst = _worst_merge(units, plan.merge_tags)
    for i, message in enumerate(plan.messages):
        if message.control is None:
            continue
        rules = dataclasses.replace(plan.rules(message, worst), opening=None)
        failed = check_copy(message.control, rules)
        if failed:
            raise InvalidInput(f"control fails the channel's checks: {', '.join(failed)}",
                               field=f"messages[{i}].control")


def _message_plan(msg: MessageSpec, t: PromptTemplate) -> MessagePlan:
    spec = channel(msg.channel)
    tokens = {f.name: f.max_new_tokens for f in spec.fields}
    if "max_new_tokens" in t.params:
        tokens[spec.main] = int(t.params["max_new_tokens"])
    control = {k: normalise_merge_tags(v) for k, v in msg.control.items()} if msg.control else None
    return MessagePlan(
        channel=msg.channel,
        template=PinnedTemplate(name=t.name, version=t.version, sha256=t.sha256, source=t.source,
                                system_prompt=t.system_prompt, variables=dict(t.variables)),
        variants=msg.variants, opening=normalise_merge_tags(msg.opening) if msg.opening else None,
        control=control, sms_max_segments=msg.sms_max_segments, max_new_tokens=tokens,
        personalize_with=list(dict.fromkeys(msg.personalize_with)),
    )


def create_campaign(session: Session, settings: Settings, store: ObjectStore, tenant_id: str,
                    body: CampaignCreate) -> CreatedCampaign:
    """Validate, plan and write one personalization job; store the normalised audience."""
    model = registry.resolve(body.model or settings.model, settings.model_allowlist).name
    try:
        brand = brands_service.get_brand(session, tenant_id, body.brand, body.brand_version)
    except NotFound:
        raise InvalidInput("unknown brand (or version)", field="brand") from None
    templates = _pin_templates(session, tenant_id, body)
    compiled = [compile_template(t.source, field=f"messages[{i}].template") for i, t in enumerate(templates)]
    _check_fields(body, templates, compiled)
    types = _field_types(body, templates)
    needed = set().union(*(c.variables for c in compiled), body.merge_tags, body.segment_by or [])
    max_rows = settings.campaign_max_recipients if body.segment_by else settings.max_audience
    rules = aud.AudienceRules(key_column=body.audience.key_column, columns=dict(body.audience.columns),
                              types=types, needed=needed, max_rows=max_rows,
                              max_record_chars=settings.max_record_chars)
    sink = io.BytesIO()
    with _audience_rows(session, store, tenant_id, body.audience) as rows:
        units, count = _units(aud.recipients(rows, rules), body, sink, settings)

    job_id = new_id("job")
    messages = [_message_plan(m, t) for m, t in zip(body.messages, templates, strict=True)]
    variants = [VariantPlan(variant_id=f"{m.channel}.v{n}", message=i, channel=m.channel,
                            angle=angle_for(m.channel, n - 1, m.variants))
                for i, m in enumerate(messages) for n in range(1, m.variants + 1)]
    if len(units) * len(variants) > settings.max_audience * settings.max_variants:
        raise InvalidInput("recipients (or segments) x variants is over the job size limit", field="messages")
    sampling = body.params.model_dump(exclude={"seed"})
    plan = CampaignPlan(
        name=body.name, mode="segment" if body.segment_by else "recipient",
        brand=PinnedBrand(name=brand.name, version=brand.version, sha256=brand.sha256,
                          rules=brands_service.describe(brand).profile),
        messages=messages, variants=variants, segment_by=list(body.segment_by or []),
        merge_tags=list(body.merge_tags), name_tag=body.name_tag, language=body.language,
        max_attempts=body.max_attempts, generation=body.generation, sampling=sampling, recipients=count,
        segments=len(units) if body.segment_by else None, audience_key=campaign_audience_key(tenant_id, job_id),
    )
    _check_controls(plan, units)
    with budget.bound(budget.RenderBudget.from_settings(settings)):
        briefs = [[c.render(u.values, field=f"audience[{i}]", as_data=True) for c in compiled]
                  for i, u in enumerate(units)]
    budget.check_amplification(settings, sum(len(b.encode()) for row in briefs for b in row),
                               sum(len(c.source.encode()) for c in compiled)
                               + sum(len(canonical_json(u.values)) for u in units), field="messages")
    job_seed = body.params.seed if body.params.seed is not None else secrets.randbelow(2**31)
    job, outbox_ids = _write_job(session, settings, tenant_id, job_id, model, plan, units, briefs, templates,
                                 job_seed)
    if body.audience.file_id is not None:  # deleting that file erases this job's copies of it
        job.options = {**job.options, SOURCE_FILE: body.audience.file_id}
    store.put_bytes(plan.audience_key, sink.getvalue(), "application/x-ndjson")
    return CreatedCampaign(job=job, outbox_ids=outbox_ids)


@contextmanager
def _audience_rows(session: Session, store: ObjectStore, tenant_id: str,
                   a: AudienceSource) -> Iterator[Iterator[tuple[int, dict[str, Any]]]]:
    """The audience's rows, whichever source it names; a stored file is streamed and closed after."""
    if a.records is not None:
        yield ((i, dict(r)) for i, r in enumerate(a.records, start=1))
    elif a.file_id is not None:
        row = files_service.get_data_file(session, store, tenant_id, a.file_id, field="audience.file_id")
        with files_service.open_content(store, row) as stream:
            yield aud.read_rows(stream, a.format, source="audience.file_id")
    else:
        yield aud.rows_from_bytes(aud.source_bytes(a.data or "", a.encoding), a.format)


def _write_job(session: Session, settings: Settings, tenant_id: str, job_id: str, model: str, plan: CampaignPlan,
               units: list[Unit], briefs: list[list[str]], templates: list[PromptTemplate],
               job_seed: int) -> tuple[Job, list[str]]:
    """The job, one item per unit and variant, and its outbox: (job, outbox ids)."""
    pinned = canonical_json([{"name": t.name, "version": t.version, "sha256": t.sha256} for t in templates])
    writer = JobWriter(session, settings, tenant_id=tenant_id, kind=CAMPAIGN_KIND, model=model,
                       queue=settings.queue_for_model(model), params=dict(plan.sampling), seed=job_seed,
                       options={"campaign": plan.model_dump(mode="json")}, template=pinned,
                       template_sha256=sha256_text(pinned), variants=len(plan.variants), job_id=job_id,
                       chunk_size=_unit_aligned(settings.chunk_size, len(plan.variants)))
    for unit, unit_briefs in zip(units, briefs, strict=True):
        for index, variant in enumerate(plan.variants):
            brief = unit_briefs[variant.message]
            named = plan.messages[variant.message].personalize_with
            personalize = {"personalize": {f: str(unit.values.get(f, "")) for f in named}} if named else {}
            writer.add(key=unit.key, variant=index, record=unit.record, prompt=brief,
                       prompt_sha256=sha256_text(brief),
                       request={"campaign": {"variant_id": variant.variant_id, "message": variant.message,
                                             "merge": unit.merge, **personalize}},
                       seed=derive_seed(job_seed, unit.key, index))
    return writer.job, writer.finish()


def _unit_aligned(chunk_size: int, per_unit: int) -> int:
    """The chunk size rounded up to whole units: a recipient's variants share a chunk, so the worker
    can compare them (near-twin variants, variants.py)."""
    return -(-chunk_size // per_unit) * per_unit


def get_campaign(session: Session, tenant_id: str, job_id: str) -> tuple[Job, CampaignPlan]:
    job = JobRepository(session).get(tenant_id, job_id)
    if job is None or job.kind != CAMPAIGN_KIND:
        raise NotFound("no such campaign", field="campaign_id")
    return job, CampaignPlan.model_validate(job.options["campaign"])


def describe(session: Session, job: Job, plan: CampaignPlan) -> CampaignOut:
    counts = {state.value: n for state, n in JobRepository(session).item_counts(job.id).items()}
    counts.update(CampaignRepository(session).check_counts(job.id))
    variants = [VariantOut(variant_id=v.variant_id, channel=v.channel, control=False) for v in plan.variants]
    variants += [VariantOut(variant_id=vid, channel=m.channel, control=True) for vid, m in plan.control_ids()]
    return CampaignOut(
        id=job.id, name=plan.name, status=job.status.value, mode=plan.mode, recipients=plan.recipients,
        segments=plan.segments, variants=variants, counts={"total": job.item_count, **counts},
        templates=[{"channel": m.channel, "name": m.template.name, "version": m.template.version}
                   for m in plan.messages],
        brand={"name": plan.brand.name, "version": plan.brand.version}, created_at=job.created_at,
        finished_at=job.finished_at, report_url=f"/v1/campaigns/{job.id}/report",
        exports={fmt: f"/v1/campaigns/{job.id}/exports/{fmt}" for fmt in CAMPAIGN_EXPORT_FORMATS},
    )


def read_export(store: ObjectStore, job: Job, fmt: str) -> bytes:
    if fmt not in CAMPAIGN_EXPORT_FORMATS:
        raise InvalidInput("export format must be csv or jsonl", field="format")
    if job.status != JobStatus.SUCCEEDED:
        raise Conflict(f"exports are written when the campaign succeeds; it is {job.status.value}",
                       field="campaign_id")
    return store.get_bytes(campaign_export_key(job.tenant_id, job.id, fmt))
