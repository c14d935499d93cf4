"""The rules for augmentation jobs. Takes a session, never commits: the caller owns the transaction.

An augmentation job reuses the job model: one item per (source row, method, k
index) — or per (label, k index) for ``generate`` — grouped into chunks and woken
through the outbox like any job. Everything is checked and every prompt rendered
before the first write, so a bad dataset or option is a 4xx with nothing written.

Item layout: the LLM methods come first, in chunks of ``chunk_size`` (one batched
``generate`` call each); the rule-based ones follow in chunks of
``rule_chunk_size`` (no model involved, so a task takes many more rows).
"""

from __future__ import annotations

import io
import json
import random
import secrets
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.orm import Session

from factory.augmentation import prompts
from factory.augmentation.repository import AugmentationRepository
from factory.augmentation.schemas import (
    AugmentationJobCreate,
    CharNoiseMethod,
    DatasetFile,
    DatasetFilesOut,
    DatasetSpec,
    EdaMethod,
    GenerateMethod,
    ParaphraseMethod,
)
from factory.augmentation.sources import SourceRow, dataset_sha256, decode_base64, iter_records, select_rows
from factory.config import Settings
from factory.db.models import Job
from factory.errors import Conflict, InvalidInput, NotFound
from factory.files import service as files_service
from factory.jobs.schemas import SOURCE_FILE
from factory.jobs.service import CreatedJob, get_job
from factory.jobs.writer import JobWriter
from factory.models import registry
from factory.provenance.hashing import canonical_json, derive_seed, sha256_text
from factory.storage import ObjectStore
from factory.storage.keys import dataset_file_key, is_dataset_file, job_report_key

KIND = "augmentation"


@dataclass
class PlannedItem:
    key: str
    variant: int
    record: dict[str, Any]
    prompt: str
    request: dict[str, Any]
    prompt_sha256: str = field(default="")


def _selector(settings: Settings, spec: DatasetSpec) -> Callable[[Iterable[dict[str, Any]]], list[SourceRow]]:
    def select(records: Iterable[dict[str, Any]]) -> list[SourceRow]:
        return select_rows(records, text_field=spec.text_field, label_field=spec.label_field,
                           id_field=spec.id_field, max_rows=settings.max_dataset_rows)
    return select


def load_inline_rows(settings: Settings, spec: DatasetSpec) -> list[SourceRow]:
    """The rows of a dataset given inline (rows or base64 content); not for ``file_id``."""
    select = _selector(settings, spec)
    if spec.rows is not None:
        return select(dict(r) for r in spec.rows)
    assert spec.format is not None and spec.content is not None
    data = decode_base64(spec.content, "dataset.content")
    return select(iter_records(io.BytesIO(data), spec.format))


def load_rows(session: Session, settings: Settings, store: ObjectStore, tenant_id: str,
              spec: DatasetSpec) -> list[SourceRow]:
    """The dataset's (id, text, label) rows, from inline rows, base64 content or an uploaded file."""
    if spec.file_id is None:
        return load_inline_rows(settings, spec)
    assert spec.format is not None
    row = files_service.get_data_file(session, store, tenant_id, spec.file_id, field="dataset.file_id")
    with files_service.open_content(store, row) as stream:
        return _selector(settings, spec)(iter_records(stream, spec.format, "dataset.file_id"))


def _record(row: SourceRow | None, label: str, method: str, **extra: Any) -> dict[str, Any]:
    return {"method": method, "label": label, "source_row_id": row.row_id if row else None,
            "source_text": row.text if row else None, **extra}


def _llm_item(key: str, variant: int, record: dict[str, Any], messages: list[dict[str, str]]) -> PlannedItem:
    return PlannedItem(key=key, variant=variant, record=record, prompt=messages[-1]["content"],
                       request={"method": record["method"], "messages": messages},
                       prompt_sha256=sha256_text(canonical_json(messages)))


def plan_items(body: AugmentationJobCreate, rows: list[SourceRow], job_seed: int) -> tuple[list[PlannedItem],
                                                                                          list[PlannedItem]]:
    """(LLM items, rule items), each in a stable order: method, then row (or label), then k."""
    llm: list[PlannedItem] = []
    rule: list[PlannedItem] = []
    by_label: dict[str, list[SourceRow]] = {}
    for row in rows:
        by_label.setdefault(row.label, []).append(row)
    for method in body.methods:
        if isinstance(method, ParaphraseMethod):
            for row in rows[:method.max_rows]:
                messages = prompts.paraphrase_messages(row.text, row.label, body.labels.get(row.label))
                for k in range(method.k):
                    llm.append(_llm_item(f"paraphrase:{row.row_id}", k, _record(row, row.label, "paraphrase"),
                                         messages))
        elif isinstance(method, GenerateMethod):
            for label, members in by_label.items():
                for k in range(method.k):
                    rng = random.Random(derive_seed(job_seed, f"generate:{label}", k))
                    shots = rng.sample(members, min(method.shots, len(members)))
                    record = _record(None, label, "generate", shots=[s.row_id for s in shots])
                    if method.output == "json":
                        messages = prompts.generate_record_messages(label, body.labels.get(label),
                                                                    [s.text for s in shots])
                        item = _llm_item(f"generate:{label}", k, record, messages)
                        item.request.update(response_format=prompts.record_format(label), params={
                            "max_new_tokens": body.params.max_new_tokens + prompts.RECORD_TOKENS})
                    else:
                        messages = prompts.generate_messages(label, body.labels.get(label), [s.text for s in shots])
                        item = _llm_item(f"generate:{label}", k, record, messages)
                    llm.append(item)
        else:
            rule.extend(_rule_items(method, rows))
    return llm, rule


def _rule_items(method: EdaMethod | CharNoiseMethod, rows: list[SourceRow]) -> Iterator[PlannedItem]:
    options = method.model_dump(exclude={"method", "k", "max_rows"})
    for row in rows[:method.max_rows]:
        sha = sha256_text(row.text)
        for k in range(method.k):
            yield PlannedItem(key=f"{method.method}:{row.row_id}", variant=k,
                              record=_record(row, row.label, method.method), prompt=row.text,
                              request={"method": method.method, "options": options}, prompt_sha256=sha)


def _check_labels(body: AugmentationJobCreate, rows: list[SourceRow]) -> None:
    known = {r.label for r in rows}
    if any(label not in known for label in body.labels):
        raise InvalidInput("labels describes a label that no dataset row carries", field="labels")


def _check_size(settings: Settings, total: int) -> None:
    limit = settings.max_dataset_rows * settings.max_variants
    if total > limit:
        raise InvalidInput(f"the methods would make {total} items; the limit is {limit} per job (lower k)",
                           field="methods")


@dataclass
class AugmentationPlan:
    """A body checked against its dataset: the source rows and every item, LLM ones first."""

    rows: list[SourceRow]
    llm: list[PlannedItem]
    rule: list[PlannedItem]
    job_seed: int

    @property
    def items(self) -> list[PlannedItem]:
        return self.llm + self.rule

    def seed_of(self, item: PlannedItem) -> int:
        """The item's seed: the same (job seed, key, variant) derivation wherever the body is run."""
        return derive_seed(self.job_seed, item.key, item.variant)


def plan(settings: Settings, body: AugmentationJobCreate, job_seed: int, rows: list[SourceRow]) -> AugmentationPlan:
    """Check the labels and the size against the dataset's rows, plan every item. Raises InvalidInput.

    Shared by the job API (``create_job``) and ``/v1/augment`` batch lines, so a body means
    the same items and seeds in both.
    """
    _check_labels(body, rows)
    llm, rule = plan_items(body, rows, job_seed)
    _check_size(settings, len(llm) + len(rule))
    return AugmentationPlan(rows=rows, llm=llm, rule=rule, job_seed=job_seed)


def create_job(session: Session, settings: Settings, store: ObjectStore, tenant_id: str,
               body: AugmentationJobCreate) -> CreatedJob:
    """Validate the dataset and options, plan every item, then write job, rows, chunks, items, outbox."""
    model = registry.resolve(body.model or settings.model, settings.model_allowlist).name
    rows = load_rows(session, settings, store, tenant_id, body.dataset)
    params = body.params.model_dump()
    job_seed = params.pop("seed")
    if job_seed is None:
        job_seed = secrets.randbelow(2**31)
    job_plan = plan(settings, body, job_seed, rows)
    rows, llm, rule = job_plan.rows, job_plan.llm, job_plan.rule

    options = {
        "dataset": {"sha256": dataset_sha256(rows), "rows": len(rows), "format": body.dataset.format or "rows",
                    "text_field": body.dataset.text_field, "label_field": body.dataset.label_field,
                    "id_field": body.dataset.id_field, "labels": dict(Counter(r.label for r in rows))},
        "methods": [m.model_dump() for m in body.methods],
        "filters": body.filters.model_dump(),
        "label_descriptions": body.labels,
        "include_source": body.include_source,
        "task": body.task,
    }
    if body.dataset.file_id is not None:  # deleting that file erases this job's copies of it
        options[SOURCE_FILE] = body.dataset.file_id
    writer = JobWriter(session, settings, tenant_id=tenant_id, kind=KIND, model=model,
                       queue=settings.queue_for_model(model), params=params, seed=job_seed, options=options,
                       template=prompts.PROMPTS_TEXT, template_sha256=prompts.PROMPTS_SHA256,
                       variants=max(m.k for m in body.methods))
    AugmentationRepository(session).add_source_rows([
        {"job_id": writer.job.id, "seq": seq, "tenant_id": tenant_id, "row_id": r.row_id, "label": r.label,
         "text": r.text} for seq, r in enumerate(rows)
    ])
    for size, planned in ((settings.chunk_size, llm), (settings.rule_chunk_size, rule)):
        writer.use_chunk_size(size)
        for p in planned:
            writer.add(key=p.key, variant=p.variant, record=p.record, prompt=p.prompt, prompt_sha256=p.prompt_sha256,
                       request=p.request, seed=job_plan.seed_of(p))
    outbox_ids = writer.finish()
    return CreatedJob(job=writer.job, outbox_ids=outbox_ids)


# --- reading what finalize wrote -------------------------------------------------
def _augmentation_job(session: Session, tenant_id: str, job_id: str) -> Job:
    job = get_job(session, tenant_id, job_id)
    if job.kind != KIND:
        raise NotFound("only augmentation jobs have a report and a dataset", field="job_id")
    if not job.status.is_terminal:
        raise Conflict(f"job is {job.status.value}; its report and dataset are written when it ends",
                       field="job_id")
    return job


def read_report(session: Session, store: ObjectStore, tenant_id: str, job_id: str) -> dict[str, Any]:
    job = _augmentation_job(session, tenant_id, job_id)
    key = job_report_key(job.tenant_id, job.id)
    if not store.exists(key):
        raise NotFound(f"job ended as {job.status.value} without a report", field="job_id")
    report: dict[str, Any] = json.loads(store.get_bytes(key))
    return report


def list_dataset_files(session: Session, store: ObjectStore, tenant_id: str, job_id: str) -> DatasetFilesOut:
    report = read_report(session, store, tenant_id, job_id)
    files = [DatasetFile(name=f["name"], bytes=f["bytes"], url=f"/v1/jobs/{job_id}/dataset/{f['name']}")
             for f in report.get("files", [])]
    return DatasetFilesOut(job_id=job_id, data=files)


def read_dataset_file(session: Session, store: ObjectStore, tenant_id: str, job_id: str,
                      name: str) -> bytes:
    if not is_dataset_file(name):
        raise NotFound("no such dataset file", field="name")
    job = _augmentation_job(session, tenant_id, job_id)
    key = dataset_file_key(job.tenant_id, job.id, name)
    if not store.exists(key):
        raise NotFound("no such dataset file", field="name")
    return store.get_bytes(key)
