"""Each job's OpenLineage run events (https://openlineage.io/spec): START when it is submitted, then
COMPLETE, FAIL or ABORT (cancelled) when it ends, with the datasets it read and wrote.

The events are asked for through the outbox in the transaction that submits or ends the job
(``request``), and a worker task emits them (workers/tasks/lineage.py), so a sink that is away
delays them and loses none. Only ids, names and counts go in: no record values or texts.

- the OpenLineage job is the tenant's kind of work (``<tenant>.<kind>``), the run is this job
  (its run id derived from the job id);
- inputs: the batch's input file, the augmentation's source dataset (by sha256), or the
  job's inline audience; outputs: the job's results in object storage, and the dataset folder
  (augmentation) or the exports (campaign).
"""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy.orm import Session

from factory import __version__
from factory.config import Settings
from factory.db.models import Job, JobStatus
from factory.outbox.repository import OutboxRepository

EMIT_LINEAGE_TASK = "factory.emit_lineage"
PRODUCER = f"urn:content-factory:{__version__}"
SCHEMA_URL = "https://openlineage.io/spec/2-0-2/OpenLineage.json#/$defs/RunEvent"
START, COMPLETE, FAIL, ABORT = "START", "COMPLETE", "FAIL", "ABORT"
_FINAL = {JobStatus.SUCCEEDED: COMPLETE, JobStatus.FAILED: FAIL, JobStatus.CANCELLED: ABORT}
_RUN_NAMESPACE = uuid.UUID("6f0e4c1a-2b1d-4c3e-9a57-2f64f0c2a7d1")


def enabled(settings: Settings) -> bool:
    return bool(settings.lineage_url or settings.lineage_file)


def request(session: Session, settings: Settings, job: Job, event_type: str) -> list[str]:
    """Ask for the job's ``event_type`` event (in the caller's transaction); outbox ids to relay after commit."""
    if not enabled(settings):
        return []
    return OutboxRepository(session).add_many(EMIT_LINEAGE_TASK, job.queue, [[job.id, event_type]])


def final_event_type(status: JobStatus | None) -> str | None:
    return _FINAL.get(status) if status is not None else None


def run_id(job_id: str) -> str:
    return str(uuid.uuid5(_RUN_NAMESPACE, job_id))


def _dataset(namespace: str, name: str, **facts: Any) -> dict[str, Any]:
    dataset: dict[str, Any] = {"namespace": namespace, "name": name}
    if facts:
        dataset["facets"] = {"contentFactory": {"_producer": PRODUCER, "_schemaURL": SCHEMA_URL, **facts}}
    return dataset


def build(settings: Settings, job: Job, event_type: str) -> dict[str, Any]:
    """The RunEvent for ``job`` as a plain dict (the OpenLineage JSON shape)."""
    namespace = f"{settings.lineage_namespace}://{job.tenant_id}"
    options = job.options or {}
    if options.get("input_key"):  # a batch file
        inputs = [_dataset(namespace, options["input_key"])]  # the stored input file
    elif isinstance(options.get("dataset"), dict):  # augmentation's source rows
        source = options["dataset"]
        inputs = [_dataset(namespace, f"datasets/{source.get('sha256')}", rows=source.get("rows"))]
    else:
        inputs = [_dataset(namespace, f"jobs/{job.id}/audience", records=job.item_count)]
    outputs = [_dataset(namespace, f"jobs/{job.id}/results", items=job.item_count, model=job.model)]
    if job.kind == "augmentation":
        outputs.append(_dataset(namespace, f"jobs/{job.id}/dataset"))
    elif job.kind == "campaign":
        outputs.append(_dataset(namespace, f"jobs/{job.id}/campaign"))
    when = job.finished_at if event_type != START and job.finished_at else job.created_at
    return {
        "eventType": event_type, "eventTime": when.isoformat() + ("Z" if when.tzinfo is None else ""),
        "producer": PRODUCER, "schemaURL": SCHEMA_URL,
        "run": {"runId": run_id(job.id), "facets": {"contentFactory": {
            "_producer": PRODUCER, "_schemaURL": SCHEMA_URL, "jobId": job.id, "seed": job.seed,
            "status": job.status.value, **({"error": job.error} if job.error else {})}}},
        "job": {"namespace": settings.lineage_namespace, "name": f"{job.tenant_id}.{job.kind}"},
        "inputs": inputs,
        "outputs": outputs if event_type != START else [],
    }
