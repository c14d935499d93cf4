"""A job's provenance as a W3C PROV-JSON document (https://www.w3.org/submissions/prov-json/).

Written to object storage when the job is finalized and served at ``GET /v1/jobs/{id}/provenance``:

- **entities**: the job's input records (one entity, the sha256 of their canonical JSON lines in
  submission order: the values never appear), its template, the model (name, weights sha256),
  and every output object (each chunk's result shard and the error file, with the sha256 of
  the bytes storage holds);
- **activities**: the job, and each chunk of it (start and end time, attempts);
- **agents**: the tenant that asked, and each worker process (host and pid) that generated;
- **relations**: the job ``used`` the inputs, template and model and ``wasAssociatedWith`` the tenant;
  each chunk ``wasInformedBy`` the job and ``wasAssociatedWith`` the workers that ran its items; each
  shard ``wasGeneratedBy`` its chunk and ``wasDerivedFrom`` the inputs.

Only ids, hashes, times and counts go in: no record values, prompts or generated texts.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from factory.db.models import Chunk, Item, Job
from factory.provenance.hashing import canonical_json
from factory.provenance.marking import TRAINED_ALGORITHMIC_MEDIA

PREFIXES = {"factory": "urn:content-factory:", "prov": "http://www.w3.org/ns/prov#",
            "xsd": "http://www.w3.org/2001/XMLSchema#"}


def _time(value: datetime | None) -> str | None:
    """prov:startTime and prov:endTime are plain xsd:dateTime strings in PROV-JSON."""
    return None if value is None else value.isoformat()


@dataclass
class ItemDigest:
    """What the manifest needs of a job's items, gathered in one pass (items are read in pages)."""

    records: Any = field(default_factory=hashlib.sha256)
    count: int = 0
    workers: dict[str, set[str]] = field(default_factory=dict)  # chunk id -> "host:pid"
    models: dict[str, dict[str, Any]] = field(default_factory=dict)  # weights sha256 -> model facts

    def add(self, item: Item) -> None:
        self.records.update((canonical_json(item.record) + "\n").encode())
        self.count += 1
        prov = item.provenance or {}
        if "worker_host" in prov:
            self.workers.setdefault(item.chunk_id, set()).add(f"{prov['worker_host']}:{prov.get('worker_pid')}")
        if prov.get("weights_sha256"):
            self.models.setdefault(prov["weights_sha256"], {
                "factory:name": prov.get("model"), "factory:generator": prov.get("generator"),
                "factory:device": prov.get("device"), "factory:dtype": prov.get("dtype")})


def build(job: Job, chunks: Iterable[Chunk], items: Iterable[Item], objects: Mapping[str, str]) -> dict[str, Any]:
    """The PROV-JSON document of a finished ``job``. ``objects``: storage key -> sha256 of the bytes stored
    there, for every output object (result shards, the error file)."""
    chunks = list(chunks)
    digest = ItemDigest()
    for item in items:
        digest.add(item)
    job_id = f"factory:job/{job.id}"
    inputs, template, tenant = f"factory:input/{job.id}", f"factory:template/{job.template_sha256}", \
        f"factory:tenant/{job.tenant_id}"
    entity: dict[str, Any] = {
        inputs: {"prov:type": "factory:InputRecords", "factory:sha256": digest.records.hexdigest(),
                 "factory:records": digest.count},
        template: {"prov:type": "factory:Template", "factory:sha256": job.template_sha256},
    }
    activity: dict[str, Any] = {job_id: _drop_none({
        "prov:type": "factory:Job", "factory:kind": job.kind, "factory:seed": job.seed,
        "factory:params": canonical_json(job.params), "prov:startTime": _time(job.started_at or job.created_at),
        "prov:endTime": _time(job.finished_at)})}
    agent: dict[str, Any] = {tenant: {"prov:type": "prov:Organization"}}
    used = {"_:u-inputs": {"prov:activity": job_id, "prov:entity": inputs},
            "_:u-template": {"prov:activity": job_id, "prov:entity": template}}
    for weights, facts in digest.models.items():
        model = f"factory:model/{weights}"
        entity[model] = _drop_none({"prov:type": "factory:Model", "factory:weights_sha256": weights, **facts})
        used[f"_:u-model-{weights[:16]}"] = {"prov:activity": job_id, "prov:entity": model}
    generated: dict[str, Any] = {}
    derived: dict[str, Any] = {}
    informed: dict[str, Any] = {}
    associated: dict[str, Any] = {"_:a-job": {"prov:activity": job_id, "prov:agent": tenant}}
    for chunk in chunks:
        chunk_id = f"factory:chunk/{chunk.id}"
        activity[chunk_id] = _drop_none({"prov:type": "factory:Chunk", "factory:seq": chunk.seq,
                                         "factory:state": chunk.state.value, "factory:attempts": chunk.attempts,
                                         "prov:startTime": _time(chunk.created_at),
                                         "prov:endTime": _time(chunk.finished_at)})
        informed[f"_:i-{chunk.id}"] = {"prov:informed": chunk_id, "prov:informant": job_id}
        for worker in sorted(digest.workers.get(chunk.id, ())):
            worker_id = f"factory:worker/{worker}"
            agent[worker_id] = {"prov:type": "prov:SoftwareAgent"}
            associated[f"_:a-{chunk.id}-{worker}"] = {"prov:activity": chunk_id, "prov:agent": worker_id}
        if chunk.storage_key and chunk.storage_key in objects:
            output = f"factory:object/{chunk.storage_key}"
            entity[output] = {"prov:type": "factory:ResultShard", "prov:location": chunk.storage_key,
                              "factory:sha256": objects[chunk.storage_key],
                              "factory:digital_source_type": TRAINED_ALGORITHMIC_MEDIA}
            generated[f"_:g-{chunk.id}"] = {"prov:entity": output, "prov:activity": chunk_id}
            derived[f"_:d-{chunk.id}"] = {"prov:generatedEntity": output, "prov:usedEntity": inputs}
    shard_keys = {c.storage_key for c in chunks}
    for key, sha in objects.items():
        if key not in shard_keys:
            output = f"factory:object/{key}"
            entity[output] = {"prov:type": "factory:JobFile", "prov:location": key, "factory:sha256": sha}
            generated[f"_:g-{key}"] = {"prov:entity": output, "prov:activity": job_id}
    return {"prefix": PREFIXES, "entity": entity, "activity": activity, "agent": agent, "used": used,
            "wasGeneratedBy": generated, "wasDerivedFrom": derived, "wasInformedBy": informed,
            "wasAssociatedWith": associated}


def _drop_none(values: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in values.items() if v is not None}
