"""Verify items: a job of kind ``verify``, run by the workers like any other job.

One item (``create``), or a job's items: all of them, or a seeded random sample (``create_for_job``).
The API never generates (it imports no torch): it copies what the worker needs from each item and its
record (the rendered prompt, the item's own request, the recorded parameters, seed and environment, the
text it produced) into one item of the verify job, in the caller's transaction; the caller commits,
then publishes (``relay.commit_then_publish``). The workers (``workers/kinds/verify.py``) regenerate each
text alone with its recorded seed and parameters, chunk by chunk like any job, and write each verdict
into the new item's provenance (``verify``); ``describe`` reads them back and adds them up.

Only items made by one generation call can be regenerated: personalization, chat and batch chat or
personalize lines. Campaign copy (checked, repaired, regenerated with new seeds) and augmentation rows
(filtered, some made by rules) are a 422 naming the kind.
"""

from __future__ import annotations

import random
import secrets
from collections import Counter
from typing import Any, Literal

from sqlalchemy.orm import Session

from factory.config import Settings
from factory.db.models import Item, ItemState, Job
from factory.errors import Conflict, InvalidInput, NotFound
from factory.jobs import service as jobs_service
from factory.jobs.service import CreatedJob
from factory.jobs.writer import JobWriter
from factory.models import registry
from factory.verify.repository import VerifyRepository
from factory.verify.schemas import ItemMismatch, Reason, VerificationOut, VerifyCounts, VerifyJobRequest

VERIFY_KIND = "verify"
VERIFIABLE_KINDS = ("personalization", "chat", "batch")
# Mismatched items a verification lists (all of them are counted, by reason, in reason_counts).
MISMATCHES_SHOWN = 100


def verification_url(job_id: str) -> str:
    return f"/v1/verifications/{job_id}"


def create(session: Session, settings: Settings, tenant_id: str, item_id: str) -> CreatedJob:
    """The verify job of ``item_id``, written, not committed. 404 for an id the tenant does not own."""
    found = VerifyRepository(session).item_with_job(tenant_id, item_id)
    if found is None:
        raise NotFound("no such item", field="item_id")
    item, job = found
    _check_kind(job, "item_id")
    if item.state != ItemState.SUCCEEDED or item.text is None or not item.provenance:
        raise Conflict("only an item that succeeded has a text and a record to verify", field="item_id")
    writer = _writer(session, settings, tenant_id, job, {"item_id": item.id, "job_id": job.id},
                     seed=_seed(item))
    _add(writer, item, job)
    return CreatedJob(job=writer.job, outbox_ids=writer.finish())


def create_for_job(session: Session, settings: Settings, tenant_id: str, job_id: str,
                   body: VerifyJobRequest) -> CreatedJob:
    """One verify job for the job's succeeded items, or a seeded random sample of ``body.sample`` of them;
    written, not committed. A whole job of more than ``verify_max_items`` items is a 422 asking for a
    sample: the request stays bounded."""
    job = jobs_service.get_job(session, tenant_id, job_id)
    _check_kind(job, "job_id")
    repo = VerifyRepository(session)
    ids = repo.succeeded_item_ids(tenant_id, job.id)
    if not ids:
        raise Conflict("the job has no succeeded item to verify (yet)", field="job_id")
    limit = settings.verify_max_items
    sample_seed: int | None = None
    if body.sample is None:
        if len(ids) > limit:
            raise InvalidInput(f"the job has {len(ids)} succeeded items, more than one verification takes "
                               f"({limit}): ask for a sample", field="sample")
    else:
        if body.sample > limit:
            raise InvalidInput(f"sample must be at most {limit}", field="sample")
        sample_seed = secrets.randbelow(2**31) if body.seed is None else body.seed
        ids = sorted(random.Random(sample_seed).sample(ids, min(body.sample, len(ids))))
    items = [item for item in repo.items(tenant_id, ids) if item.text is not None and item.provenance]
    if not items:
        raise Conflict("none of the job's items has a record to verify", field="job_id")
    writer = _writer(session, settings, tenant_id, job, {"item_id": None, "job_id": job.id,
                                                          "sample": body.sample, "sample_seed": sample_seed},
                     seed=job.seed)
    for item in items:
        _add(writer, item, job)
    return CreatedJob(job=writer.job, outbox_ids=writer.finish())


def _check_kind(job: Job, field: str) -> None:
    if job.kind not in VERIFIABLE_KINDS:
        raise InvalidInput(f"items of kind '{job.kind}' are not made by one generation call and cannot be "
                           f"regenerated; verify works on {', '.join(VERIFIABLE_KINDS)} items", field=field)


def _seed(item: Item) -> int:
    return int((item.provenance or {}).get("seed", item.seed))


def _writer(session: Session, settings: Settings, tenant_id: str, job: Job, options: dict[str, Any],
            seed: int) -> JobWriter:
    model = registry.resolve(job.model, settings.model_allowlist).name
    return JobWriter(session, settings, tenant_id=tenant_id, kind=VERIFY_KIND, model=model,
                     queue=settings.queue_for_model(model), params=dict(job.params), seed=seed,
                     options=options, template_sha256=job.template_sha256, system_prompt=job.system_prompt)


def _add(writer: JobWriter, item: Item, job: Job) -> None:
    """One item to regenerate: its prompt and a snapshot of what the worker compares with. Its recorded
    parameters travel in the snapshot (the worker regenerates with them, not the verify job's)."""
    writer.add(key=item.id, variant=0, record={"item_id": item.id, "job_id": job.id}, prompt=item.prompt,
               prompt_sha256=item.prompt_sha256, request={"target": _target(item, job)}, seed=_seed(item))


def _target(item: Item, job: Job) -> dict[str, Any]:
    """What the worker regenerates from and compares with: the item's request, its record and its text."""
    return {"item_id": item.id, "job_id": job.id, "kind": job.kind, "request": item.request,
            "record": item.provenance, "text": item.text}


def get(session: Session, tenant_id: str, verification_id: str) -> VerificationOut:
    repo = VerifyRepository(session)
    job = repo.verify_job(tenant_id, verification_id, VERIFY_KIND)
    if job is None:
        raise NotFound("no such verification", field="verification_id")
    return describe(job, repo.verify_items(tenant_id, job.id))


def describe(job: Job, items: list[Item]) -> VerificationOut:
    """The verdicts added up: counts, mismatches by reason, the first mismatched items; one item's own
    verdict, reasons and error as well when one item was verified."""
    verdicts = [(item, (item.provenance or {}).get("verify") or {}) for item in items]
    results = Counter(v.get("result") for item, v in verdicts if item.state == ItemState.SUCCEEDED)
    failed = sum(item.state in (ItemState.FAILED, ItemState.CANCELLED) for item in items)
    counts = VerifyCounts(total=len(items), match=results["match"], mismatch=results["mismatch"], failed=failed,
                          pending=len(items) - results["match"] - results["mismatch"] - failed)
    mismatched = [(item, v) for item, v in verdicts if v.get("result") == "mismatch"]
    reason_counts = Counter(r["field"] for _, v in mismatched for r in v.get("reasons", []))
    result: Literal["match", "mismatch"] | None = (
        "mismatch" if counts.mismatch else "match" if counts.match == counts.total else None)
    one = items[0] if job.options.get("item_id") and items else None
    one_verdict = (one.provenance or {}).get("verify") or {} if one is not None else {}
    return VerificationOut(
        id=job.id, status=job.status.value, item_id=job.options.get("item_id"), job_id=job.options["job_id"],
        result=result, reasons=[Reason.model_validate(r) for r in one_verdict.get("reasons", [])],
        error=one.error if one is not None else None, counts=counts, sample=job.options.get("sample"),
        sample_seed=job.options.get("sample_seed"), reason_counts=dict(sorted(reason_counts.items())),
        mismatches=[ItemMismatch(item_id=v.get("item_id") or item.key,
                                 reasons=[Reason.model_validate(r) for r in v.get("reasons", [])])
                    for item, v in mismatched[:MISMATCHES_SHOWN]],
        url=verification_url(job.id))
