"""Verify one item: a job of kind ``verify`` with one item, run by the workers like any other job.

The API never generates (it imports no torch): ``create`` copies what the worker needs from the item
and its record (the rendered prompt, the item's own request, the recorded parameters, seed and
environment, the text it produced) into the verify job's one item, in the caller's transaction; the
caller commits, then publishes (``relay.commit_then_publish``). The worker (``workers/kinds/verify.py``)
regenerates the text alone with the recorded seed and parameters and writes the verdict into the new
item's provenance (``verify``); ``describe`` reads it back.

Only items made by one generation call can be regenerated: personalization, chat and batch chat or
personalize lines. Campaign copy (checked, repaired, regenerated with new seeds) and augmentation rows
(filtered, some made by rules) are a 422 naming the kind.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from factory.config import Settings
from factory.db.models import Item, ItemState, Job
from factory.errors import Conflict, InvalidInput, NotFound
from factory.jobs.service import CreatedJob
from factory.jobs.writer import JobWriter
from factory.models import registry
from factory.verify.repository import VerifyRepository
from factory.verify.schemas import Reason, VerificationOut

VERIFY_KIND = "verify"
VERIFIABLE_KINDS = ("personalization", "chat", "batch")


def verification_url(job_id: str) -> str:
    return f"/v1/verifications/{job_id}"


def create(session: Session, settings: Settings, tenant_id: str, item_id: str) -> CreatedJob:
    """The verify job of ``item_id``, written, not committed. 404 for an id the tenant does not own."""
    found = VerifyRepository(session).item_with_job(tenant_id, item_id)
    if found is None:
        raise NotFound("no such item", field="item_id")
    item, job = found
    if job.kind not in VERIFIABLE_KINDS or (item.request or {}).get("method"):
        raise InvalidInput(f"items of kind '{job.kind}' are not made by one generation call and cannot be "
                           f"regenerated; verify works on {', '.join(VERIFIABLE_KINDS)} items", field="item_id")
    if item.state != ItemState.SUCCEEDED or item.text is None or not item.provenance:
        raise Conflict("only an item that succeeded has a text and a record to verify", field="item_id")
    model = registry.resolve(job.model, settings.model_allowlist).name
    record = item.provenance
    seed = int(record.get("seed", item.seed))
    writer = JobWriter(session, settings, tenant_id=tenant_id, kind=VERIFY_KIND, model=model,
                       queue=settings.queue_for_model(model), params=dict(record.get("params") or job.params),
                       seed=seed, options={"item_id": item.id, "job_id": job.id},
                       template_sha256=job.template_sha256, system_prompt=job.system_prompt)
    writer.add(key=item.id, variant=0, record={"item_id": item.id, "job_id": job.id}, prompt=item.prompt,
               prompt_sha256=item.prompt_sha256, request={"target": _target(item, job)}, seed=seed)
    return CreatedJob(job=writer.job, outbox_ids=writer.finish())


def _target(item: Item, job: Job) -> dict[str, Any]:
    """What the worker regenerates from and compares with: the item's request, its record and its text."""
    return {"item_id": item.id, "job_id": job.id, "kind": job.kind, "request": item.request,
            "record": item.provenance, "text": item.text}


def get(session: Session, tenant_id: str, verification_id: str) -> VerificationOut:
    found = VerifyRepository(session).verify_job(tenant_id, verification_id, VERIFY_KIND)
    if found is None:
        raise NotFound("no such verification", field="verification_id")
    return describe(*found)


def describe(job: Job, item: Item) -> VerificationOut:
    verdict: dict[str, Any] = (item.provenance or {}).get("verify") or {}
    return VerificationOut(
        id=job.id, status=job.status.value, item_id=job.options["item_id"], job_id=job.options["job_id"],
        result=verdict.get("result"), reasons=[Reason.model_validate(r) for r in verdict.get("reasons", [])],
        error=item.error, url=verification_url(job.id))
