"""Stable fingerprints recorded with every generated text."""

from __future__ import annotations

import hashlib
import json
from typing import Any


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


EMPTY_SHA256 = sha256_text("")  # of a text never given (a batch line's template, a job without one)


def canonical_json(value: Any) -> str:
    """JSON with sorted keys and no whitespace: equal values give equal bytes."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def derive_seed(job_seed: int, key: str, variant: int) -> int:
    """An item's seed depends on the job seed and its identity, not on its position,
    so re-chunking a job or regenerating one item reproduces the same text."""
    digest = hashlib.sha256(f"{job_seed}:{key}:{variant}".encode()).digest()
    return int.from_bytes(digest[:4], "big") & 0x7FFF_FFFF


def schema_sha256(schema: Any) -> str:
    """sha256 of a response_format JSON schema as compact JSON, keys in the order given (the order the model
    writes them in, so two orders are two grammars); recorded in the provenance, keys the worker's grammar cache."""
    return sha256_text(json.dumps(schema, separators=(",", ":"), ensure_ascii=False))
