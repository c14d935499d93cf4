"""Batch jobs (OpenAI Batch API): lines run as items; finalization writes the output and error
files (see factory/batches/service.py).

A chunk is planned at submit as a range of lines of the input file; ``write_items``
turns them into items when a worker claims it (factory/batches/chunks.py).
A chunk may mix chat, personalize and augment items. ``run`` is the augmentation
kind's own per-item logic (``augmentation.run_items``): every item that needs the
model — chat, personalize, and the LLM methods of augment lines — goes into one
batched ``generate`` call; EDA and character-noise items are computed by rules.
Augment items get the augmentation kind's provenance.

``finalize`` runs the augmentation quality filters per augment line (that line's
outputs against that line's source rows, with that line's filters), stores the
verdicts in the augmentation verdict table, and only then renders the files: an
augment line's response is a pure function of its items and their verdicts, so it
is rendered (in partial output too) only once the batch has been finalized.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from factory.augmentation.prompts import PROMPTS_SHA256
from factory.augmentation.repository import AugmentationRepository
from factory.augmentation.schemas import LLM_METHODS, FilterSpec
from factory.batches import claim as batch_claim
from factory.batches import finalize as batch_finalize
from factory.batches.lines import AUGMENT, augment_line_context
from factory.batches.output import group_lines
from factory.batches.repository import BatchRepository
from factory.config import Settings, get_settings
from factory.db.models import Chunk, Item, ItemState, Job
from factory.jobs.execution import DeferredItems, SourceNeeded
from factory.storage import ObjectStore
from workers.augment.filters import Source
from workers.generators.base import Generator
from workers.kinds import augmentation
from workers.kinds.base import KindHandler, Outcome, RunContext

_AUGMENTATION = augmentation.AugmentationHandler()


class BatchHandler(KindHandler):
    def run(self, gen: Generator, job: Job, items: list[Item]) -> list[Outcome]:
        return augmentation.run_items(self, gen, job, items)

    def provenance(self, gen: Generator, job: Job, item: Item, outcome: Outcome, ctx: RunContext,
                   batch_size: int, generate_ms: float) -> dict[str, Any]:
        if not augmentation.is_augmentation_item(item):
            return super().provenance(gen, job, item, outcome, ctx, batch_size, generate_ms)
        prov = _AUGMENTATION.provenance(gen, job, item, outcome, ctx, batch_size, generate_ms)
        if (item.request or {}).get("method") in LLM_METHODS:
            prov["template_sha256"] = PROMPTS_SHA256  # the augmentation prompts, not the batch's (empty) template
        return prov

    def read_deferred(self, settings: Settings, store: ObjectStore, deferred: DeferredItems) -> bytes:
        return batch_claim.read_chunk_lines(store, deferred.options, deferred.pending_lines)

    def write_items(self, session: Session, settings: Settings, store: ObjectStore, job: Job, chunk: Chunk,
                    source: bytes | None) -> int:
        if source is None:
            assert chunk.pending_lines is not None  # the claim asks only for deferred chunks
            raise SourceNeeded(DeferredItems(job.kind, dict(job.options), dict(chunk.pending_lines)))
        return batch_claim.write_chunk_items(session, settings, job, chunk, source)

    def finalize(self, session: Session, job: Job, store: ObjectStore) -> list[str]:
        """Items of the chunks that ended unclaimed (cancelled, expired), manifest, augment lines'
        verdicts, then the OpenAI output/error JSONL files.

        Idempotent: the verdicts replace the job's previous ones, and the files have
        deterministic ids and keys.
        """
        batch_claim.write_unclaimed_items(session, get_settings(), store, job)
        super().finalize(session, job, store)
        filter_augment_lines(session, job)
        return batch_finalize.finalize_batch(session, store, job)


def filter_augment_lines(session: Session, job: Job) -> int:
    """Judge every augment line whose items all succeeded; returns how many lines were judged.

    A line with a failed or cancelled item is answered in the error file and needs no
    verdicts. Lines are judged one at a time, each against its own source rows, so
    a duplicate across two lines is not a duplicate.
    """
    rows: list[dict[str, Any]] = []
    lines = 0
    for group in group_lines(BatchRepository(session).iter_items(job.id)):
        if group[0].record.get("url") != AUGMENT or any(i.state != ItemState.SUCCEEDED for i in group):
            continue
        line = augment_line_context(group[0].record)
        sources = [Source(row_id, label, text) for row_id, label, text in line["sources"]]
        candidates, result = augmentation.judge(FilterSpec.model_validate(line["filters"]), group, sources)
        rows += augmentation.verdict_rows(job, candidates, result.verdicts)
        lines += 1
    AugmentationRepository(session).replace_verdicts(job.id, rows)
    session.flush()
    return lines
