"""Every object key the factory writes, built from server-generated ids only."""

from __future__ import annotations

import re

_ID = re.compile(r"^[a-z]{2,8}_[0-9a-f]{28}$")
_TENANT = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


def _check(value: str, pattern: re.Pattern[str], what: str) -> str:
    if not pattern.fullmatch(value):
        raise ValueError(f"refusing to build a storage key from a malformed {what}")
    return value


def result_shard_key(tenant_id: str, job_id: str, chunk_seq: int) -> str:
    """One JSONL shard per chunk: deterministic, so a redelivered chunk overwrites its own shard."""
    return (
        f"tenants/{_check(tenant_id, _TENANT, 'tenant id')}/jobs/{_check(job_id, _ID, 'job id')}"
        f"/results/chunk-{int(chunk_seq):06d}.jsonl"
    )


def job_results_prefix(tenant_id: str, job_id: str) -> str:
    return f"tenants/{_check(tenant_id, _TENANT, 'tenant id')}/jobs/{_check(job_id, _ID, 'job id')}/results/"


def job_manifest_key(tenant_id: str, job_id: str) -> str:
    """A small JSON summary of a finished job (counts, model, parameters)."""
    return (f"tenants/{_check(tenant_id, _TENANT, 'tenant id')}/jobs/{_check(job_id, _ID, 'job id')}"
            "/manifest.json")


def job_provenance_key(tenant_id: str, job_id: str) -> str:
    """The job's W3C PROV-JSON document (factory/provenance/manifest.py), written at finalization."""
    return (f"tenants/{_check(tenant_id, _TENANT, 'tenant id')}/jobs/{_check(job_id, _ID, 'job id')}"
            "/provenance.json")


def job_errors_key(tenant_id: str, job_id: str) -> str:
    """The job's error file: one JSONL line per failed item, with the reason (written at finalization)."""
    return (f"tenants/{_check(tenant_id, _TENANT, 'tenant id')}/jobs/{_check(job_id, _ID, 'job id')}"
            "/errors.jsonl")


def file_content_key(tenant_id: str, file_id: str) -> str:
    """An uploaded or generated file (OpenAI Files API): one object per file id."""
    return (f"tenants/{_check(tenant_id, _TENANT, 'tenant id')}/files/{_check(file_id, _ID, 'file id')}"
            "/content.jsonl")


def _job_prefix(tenant_id: str, job_id: str) -> str:
    return f"tenants/{_check(tenant_id, _TENANT, 'tenant id')}/jobs/{_check(job_id, _ID, 'job id')}"


def job_prefix(tenant_id: str, job_id: str) -> str:
    """Every object a job wrote (shards, error file, manifest, audience, exports, dataset) is under this."""
    return _job_prefix(tenant_id, job_id) + "/"


def campaign_audience_key(tenant_id: str, job_id: str) -> str:
    """A campaign's recipients as submitted (normalised JSONL), read back by the export step."""
    return f"{_job_prefix(tenant_id, job_id)}/campaign/audience.jsonl"


def campaign_report_key(tenant_id: str, job_id: str) -> str:
    return f"{_job_prefix(tenant_id, job_id)}/campaign/report.json"


CAMPAIGN_EXPORT_FORMATS = ("csv", "jsonl")


def campaign_export_key(tenant_id: str, job_id: str, fmt: str) -> str:
    """One row (CSV) or line (JSONL) per recipient, columns per variant, for ESP import."""
    if fmt not in CAMPAIGN_EXPORT_FORMATS:
        raise ValueError("refusing to build a storage key for an unknown export format")
    return f"{_job_prefix(tenant_id, job_id)}/campaign/recipients.{fmt}"


# --- augmentation jobs ---------------------------------------------------------
# The exported dataset is a Hugging Face-style folder: a card, Parquet shards
# under data/, the same rows as JSONL, and the rejected rows with their reasons.
DATASET_CARD = "README.md"
DATASET_JSONL = "jsonl/train.jsonl"
DATASET_REJECTED = "rejected.jsonl"
_DATASET_FILE = re.compile(r"^(README\.md|jsonl/train\.jsonl|rejected\.jsonl|data/train-\d{5}-of-\d{5}\.parquet)$")


def dataset_shard_name(index: int, count: int) -> str:
    """Parquet shard names as the Hugging Face hub writes them: data/train-00000-of-00002.parquet."""
    if not 0 <= index < count <= 99_999:
        raise ValueError("shard index out of range")
    return f"data/train-{index:05d}-of-{count:05d}.parquet"


def is_dataset_file(name: str) -> bool:
    return bool(_DATASET_FILE.fullmatch(name))


def dataset_prefix(tenant_id: str, job_id: str) -> str:
    return _job_prefix(tenant_id, job_id) + "/dataset/"


def dataset_file_key(tenant_id: str, job_id: str, name: str) -> str:
    """A file of a job's exported dataset; only the names the exporter writes are accepted."""
    if not is_dataset_file(name):
        raise ValueError("refusing to build a storage key from an unknown dataset file name")
    return dataset_prefix(tenant_id, job_id) + name


def job_report_key(tenant_id: str, job_id: str) -> str:
    """An augmentation job's report: filter rates, diversity, label distribution."""
    return _job_prefix(tenant_id, job_id) + "/report.json"
