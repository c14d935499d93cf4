"""The ledger check: every input item ends exactly once, in the output or in the errors.

Checked three ways that must agree: the API's counts, the API's results stream,
and the objects in storage (the succeeded lines of the chunk shards are the
output; the job's errors.jsonl is the error file).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import httpx

from factory.storage import ObjectStore
from factory.storage.keys import job_errors_key, job_results_prefix

Pair = tuple[str, int]  # (recipient key, variant)


@dataclass(frozen=True)
class Ledger:
    job: dict[str, Any]
    texts: dict[Pair, str]  # succeeded items and their text
    errors: dict[Pair, str]  # failed items and their reason


def _dupes(pairs: Iterable[Pair]) -> list[Pair]:
    return sorted(p for p, n in Counter(pairs).items() if n > 1)


def _jsonl(data: bytes) -> list[dict[str, Any]]:
    return [json.loads(line) for line in data.decode().splitlines() if line.strip()]


def check_ledger(client: httpx.Client, job_id: str, expected: Iterable[Pair], store: ObjectStore,
                 tenant: str = "default") -> Ledger:
    """Assert the exactly-once ledger for a finished job; return what it found for further checks."""
    expected = sorted(expected)
    job = client.get(f"/v1/jobs/{job_id}").json()
    assert job["status"] in ("succeeded", "failed"), job

    lines = [json.loads(x) for x in client.get(f"/v1/jobs/{job_id}/results").text.splitlines()]
    pairs = [(x["key"], x["variant"]) for x in lines]
    assert _dupes(pairs) == [], "items reported twice by the API"
    assert sorted(pairs) == expected, "the API's results are not exactly the input items"
    assert {x["status"] for x in lines} <= {"succeeded", "failed"}
    texts = {(x["key"], x["variant"]): x["text"] for x in lines if x["status"] == "succeeded"}
    errors = {(x["key"], x["variant"]): x["error"] for x in lines if x["status"] == "failed"}
    assert all(texts.values()) and all(errors.values())
    assert job["counts"] == {"total": len(expected), "pending": 0, "succeeded": len(texts),
                             "failed": len(errors), "cancelled": 0}, job["counts"]

    shard_lines = [line for key in store.list_keys(job_results_prefix(tenant, job_id))
                   for line in _jsonl(store.get_bytes(key))]
    assert _dupes((x["key"], x["variant"]) for x in shard_lines) == [], "an item is in two shards"
    output = {(x["key"], x["variant"]): x["text"] for x in shard_lines if x["status"] == "succeeded"}
    error_file = _jsonl(store.get_bytes(job_errors_key(tenant, job_id)))
    error_pairs = [(x["key"], x["variant"]) for x in error_file]
    assert _dupes(error_pairs) == [], "an item is twice in the error file"
    assert output == texts, "the shards' output differs from the database's"
    assert {p: x["error"] for p, x in zip(error_pairs, error_file, strict=True)} == errors
    assert set(output).isdisjoint(error_pairs)
    assert sorted([*output, *error_pairs]) == expected, "output + errors are not exactly the input items"
    # every failed line a shard holds is also in the error file
    assert {(x["key"], x["variant"]) for x in shard_lines if x["status"] == "failed"} <= set(error_pairs)
    return Ledger(job=job, texts=texts, errors=errors)


def check_batch_ledger(client: httpx.Client, batch: dict[str, Any], custom_ids: list[str]) -> dict[str, Any]:
    """The same promise for a finished batch: every line's custom_id once, in the output or the error
    file, in input order within each, and the request counts agree; returns the output lines."""
    assert batch["status"] in ("completed", "cancelled", "expired"), batch

    def lines(file_id: str | None) -> list[dict[str, Any]]:
        return _jsonl(client.get(f"/v1/files/{file_id}/content").content) if file_id else []

    output, errors = lines(batch["output_file_id"]), lines(batch["error_file_id"])
    got = [x["custom_id"] for x in output] + [x["custom_id"] for x in errors]
    assert sorted(p for p, n in Counter(got).items() if n > 1) == [], "a line answered twice"
    assert sorted(got) == sorted(custom_ids), "output + errors are not exactly the input lines"
    order = {c: i for i, c in enumerate(custom_ids)}
    for answered in (output, errors):
        assert [order[x["custom_id"]] for x in answered] == sorted(order[x["custom_id"]] for x in answered)
    assert batch["request_counts"] == {"total": len(custom_ids), "completed": len(output), "failed": len(errors)}
    assert all(x["response"]["body"]["choices"][0]["message"]["content"] for x in output)
    return {"output": output, "errors": errors}

