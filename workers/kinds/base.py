"""The default behaviour every kind starts from: chat generation, poison isolation, splitting a
batch that runs out of memory, an error file and a manifest."""

from __future__ import annotations

import json
import logging
import os
import socket
from dataclasses import dataclass
from typing import Any

from celery.exceptions import SoftTimeLimitExceeded
from sqlalchemy.orm import Session

from factory import __version__
from factory.config import Settings
from factory.db.models import Chunk, Item, Job
from factory.jobs import execution
from factory.jobs.execution import CheckOutcome
from factory.jobs.service import result_line
from factory.logs import describe_exception
from factory.provenance.hashing import canonical_json
from factory.storage import ObjectStore
from factory.storage.keys import job_errors_key, job_manifest_key
from workers.generators.base import (
    GenerationRequest,
    GenerationResult,
    Generator,
    OutputFormat,
    PromptTooLong,
    is_out_of_memory,
)

log = logging.getLogger(__name__)

PARAM_NAMES = ("max_new_tokens", "temperature", "top_p", "repetition_penalty")


@dataclass
class Outcome:
    """What happened to one item: a text, or an error; ``extra`` goes into its provenance."""

    result: GenerationResult | None
    error: str | None = None
    extra: dict[str, Any] | None = None
    # Kinds that check their output (campaigns) also say how the checks went.
    checks: CheckOutcome | None = None


@dataclass(frozen=True)
class RunContext:
    chunk_id: str
    attempt: int
    queue_ms: float


class KindHandler:
    """Override what a kind does differently; the defaults suit plain chat generation."""

    def read_deferred(self, settings: Settings, store: ObjectStore, deferred: execution.DeferredItems) -> bytes:
        """Fetch what a chunk planned without items (``chunk.pending_lines``) writes them from, outside
        the claim's transaction. Only kinds that defer items (batches) override this and ``write_items``."""
        raise execution.UnreadableChunk(f"job kind '{deferred.kind}' does not defer items")

    def write_items(self, session: Session, settings: Settings, store: ObjectStore, job: Job, chunk: Chunk,
                    source: bytes | None) -> int:
        """Write the items of a chunk planned without them, in the claim's transaction, from ``source``
        (``read_deferred``'s); raise ``execution.SourceNeeded`` while it is None. Returns how many."""
        raise execution.UnreadableChunk(f"job kind '{job.kind}' does not defer items")

    def requests(self, job: Job, items: list[Item]) -> list[GenerationRequest]:
        out = []
        for item in items:
            req = item.request or {}
            params = {k: v for k, v in {**job.params, **req.get("params", {})}.items() if k in PARAM_NAMES}
            stop = tuple(req.get("stop") or ())
            if req.get("messages"):
                out.append(GenerationRequest(messages=tuple(req["messages"]), seed=item.seed, stop=stop,
                                             response_format=output_format(req.get("response_format")), **params))
            else:
                out.append(GenerationRequest.from_prompt(item.prompt, item.seed, job.system_prompt, stop=stop,
                                                         **params))
        return out

    def run(self, gen: Generator, job: Job, items: list[Item]) -> list[Outcome]:
        return generate_isolating(gen, self.requests(job, items))

    def provenance(self, gen: Generator, job: Job, item: Item, outcome: Outcome, ctx: RunContext,
                   batch_size: int, generate_ms: float) -> dict[str, Any]:
        info = gen.info
        req = item.request or {}
        prov: dict[str, Any] = {
            "model": job.model, "weights_sha256": info.weights_sha256, "generator": info.name,
            "factory_version": __version__, "libraries": info.libraries,
            "template_sha256": job.template_sha256, "prompt_sha256": item.prompt_sha256,
            "params": {**job.params, **req.get("params", {})}, "seed": item.seed, "job_seed": job.seed,
            "worker_host": socket.gethostname(), "worker_pid": os.getpid(),
            "device": info.device, "dtype": info.dtype,
            "chunk_id": ctx.chunk_id, "attempt": ctx.attempt, "batch_size": batch_size,
            "timings_ms": {"queue": round(ctx.queue_ms, 1), "generate": round(generate_ms, 1)},
        }
        if outcome.result is not None:
            prov.update(prompt_tokens=outcome.result.prompt_tokens,
                        completion_tokens=outcome.result.completion_tokens,
                        finish_reason=outcome.result.finish_reason)
        if outcome.extra:
            prov.update(outcome.extra)
        fmt = req.get("response_format")
        if fmt:  # what the output was held to; the schema itself is in the request, found by its hash
            prov["response_format"] = {k: fmt[k] for k in ("type", "name", "strict", "schema_sha256") if k in fmt}
        return prov

    def finalize(self, session: Session, job: Job, store: ObjectStore) -> list[str]:
        """The job-level step after every chunk ended. Must be idempotent (it can run twice).

        Writes the error file (every failed item with its reason, one JSON line each:
        the items of dead-lettered chunks have no shard, so this is where they are) and
        a manifest, then the job's PROV-JSON document. Returns outbox ids to relay once the
        job's final status is committed (e.g. a webhook).
        """
        failed = execution.failed_items(session, job.id)
        errors = "".join(canonical_json(result_line(item, job)) + "\n" for item in failed).encode()
        store.put_bytes(job_errors_key(job.tenant_id, job.id), errors, "application/x-ndjson")
        counts = {state.value: n for state, n in execution.item_counts(session, job.id).items()}
        manifest = {"job_id": job.id, "kind": job.kind, "model": job.model, "seed": job.seed,
                    "params": job.params, "template_sha256": job.template_sha256, "counts": counts,
                    "chunks": job.chunk_count, "factory_version": __version__}
        summary = canonical_json(manifest).encode()
        store.put_bytes(job_manifest_key(job.tenant_id, job.id), summary, "application/json")
        execution.write_provenance(session, store, job, {job_errors_key(job.tenant_id, job.id): errors,
                                                         job_manifest_key(job.tenant_id, job.id): summary})
        return []


def generate_isolating(gen: Generator, reqs: list[GenerationRequest]) -> list[Outcome]:
    """One batched call; a batch that raises is split in halves, recursively, until what fails is alone.

    One rule for two faults: a batch that ran out of memory fits once it is small
    enough, and a poison item ends up failing by itself while the rest of its chunk
    succeeds (in about 2·log2(n) calls rather than n). Seeds are per item, so
    splitting changes no text; an item's provenance records the size of the batch
    it was really generated in.
    """
    if not reqs:
        return []
    try:
        return [_outcome(r) for r in gen.generate(reqs)]
    except SoftTimeLimitExceeded:
        raise
    except Exception as exc:
        if len(reqs) == 1:
            return [_failed(exc)]
        if is_out_of_memory(exc):
            log.warning("batch of %d ran out of memory; splitting it in halves", len(reqs))
        else:
            log.warning("batch of %d failed; splitting it in halves to isolate the bad item: %s", len(reqs),
                        describe_exception(exc))
    half = len(reqs) // 2
    return _sized(generate_isolating(gen, reqs[:half]), half) + \
        _sized(generate_isolating(gen, reqs[half:]), len(reqs) - half)


def output_format(fmt: dict[str, Any] | None) -> OutputFormat | None:
    """An item's ``response_format`` (factory/structured/checks.py wrote it) as the generator takes it."""
    if not fmt:
        return None
    if fmt["type"] == "json_object":
        return OutputFormat(None, "json_object")
    return OutputFormat(json.dumps(fmt["schema"], separators=(",", ":"), ensure_ascii=False), fmt["schema_sha256"])


def _outcome(result: GenerationResult) -> Outcome:
    """A result, or the failure the generator found in it (a structured output cut off or not JSON):
    never a text marked as success that is not what was asked for."""
    if result.error is None:
        return Outcome(result)
    return Outcome(None, result.error, extra={"finish_reason": result.finish_reason,
                                              "prompt_tokens": result.prompt_tokens,
                                              "completion_tokens": result.completion_tokens})


def _failed(exc: Exception) -> Outcome:
    """A single item the generator cannot do."""
    reason = "out of memory" if is_out_of_memory(exc) else str(exc) if isinstance(exc, PromptTooLong) \
        else type(exc).__name__
    return Outcome(None, f"generation failed: {reason}", extra={"batch_size": 1})


def _sized(outcomes: list[Outcome], batch_size: int) -> list[Outcome]:
    """Record the batch an outcome was generated in (the innermost split wins)."""
    for outcome in outcomes:
        outcome.extra = {"batch_size": batch_size, **(outcome.extra or {})}
    return outcomes
