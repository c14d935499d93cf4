"""Augmentation: new labelled rows from a dataset, filtered for quality, exported as a dataset.

``run`` handles one chunk: the LLM items (paraphrase, generate) go to the model in
one batched call and their answers are cleaned to one utterance; the rule-based
items (EDA, character noise) are computed here, seeded by the item's seed, with
no model involved.

``finalize`` runs once every chunk has ended: it needs all outputs at once for
deduplication across items. It runs the quality filters, writes one verdict per
generated item (a filtered item stays ``succeeded``: it was generated; its
verdict says it was refused and by which filter), computes the report, and
writes the dataset (Parquet shards, JSONL, card) and the report to object
storage. Everything it writes has a fixed key or replaces the job's previous
verdicts, so a rerun gives the same result.
"""

from __future__ import annotations

import dataclasses
import json
import os
import socket
from collections import Counter
from typing import Any

import numpy as np
from sqlalchemy.orm import Session

from factory import __version__
from factory.augmentation.repository import AugmentationRepository
from factory.augmentation.schemas import LLM_METHODS, RULE_METHODS, FilterSpec
from factory.config import get_settings
from factory.db.models import Item, Job
from factory.jobs import execution
from factory.provenance.hashing import canonical_json
from factory.provenance.marking import RULES_GENERATOR, marking
from factory.storage import ObjectStore
from factory.storage.keys import dataset_file_key, job_report_key
from workers.augment import eda, export, llm_output, noise
from workers.augment.embeddings import get_encoder
from workers.augment.filters import Candidate, FilterPipeline, FilterResult, Source, Verdict
from workers.augment.metrics import diversity
from workers.augment.synonyms import WORDNET_VERSION
from workers.generators.base import GenerationResult, Generator
from workers.kinds.base import KindHandler, Outcome, RunContext, generate_isolating


def apply_rule(method: str, text: str, options: dict[str, Any], seed: int, variant: int) -> str:
    """One rule-based variant; deterministic in (text, options, seed, variant)."""
    if method == "eda":
        operation = eda.pick_operation(options["operations"], variant, seed)
        return eda.augment(text, operation=operation, alpha=options["alpha"], seed=seed)
    if method == "char_noise":
        return noise.augment(text, rate=options["rate"], operations=options["operations"], seed=seed)
    raise ValueError(f"unknown rule-based method {method!r}")


def is_rule_item(item: Item) -> bool:
    """An EDA or character-noise item: computed here, no model involved."""
    return (item.request or {}).get("method") in RULE_METHODS


def is_augmentation_item(item: Item) -> bool:
    """An item planned by the augmentation service (its request names an augmentation method)."""
    return (item.request or {}).get("method") in LLM_METHODS | RULE_METHODS


def run_items(handler: KindHandler, gen: Generator, job: Job, items: list[Item]) -> list[Outcome]:
    """Outcomes of a chunk that may mix augmentation items with plain chat items.

    Every item that needs the model (LLM methods and anything that is not an
    augmentation item) goes into ONE batched ``generate`` call, built by
    ``handler.requests``; answers to LLM methods are cleaned to one utterance; rule
    items are computed here. The augmentation kind and the batch kind both run this.
    """
    outcomes: list[Outcome | None] = [None] * len(items)
    model = [i for i, item in enumerate(items) if not is_rule_item(item)]
    if model:
        generated = generate_isolating(gen, handler.requests(job, [items[i] for i in model]))
        for i, outcome in zip(model, generated, strict=True):
            llm = (items[i].request or {}).get("method") in LLM_METHODS
            outcomes[i] = _clean(outcome, "response_format" in (items[i].request or {})) if llm else outcome
    return [o if o is not None else _rule_outcome(items[i]) for i, o in enumerate(outcomes)]


def planned_variant(item: Item) -> int:
    """The item's k index for its (method, row or label). A batch line numbers all its items in
    ``item.variant`` and keeps the planned index in ``record["variant"]``."""
    return int(item.record.get("variant", item.variant))


def _rule_outcome(item: Item) -> Outcome:
    req = item.request or {}
    method = req.get("method", "")
    variant = planned_variant(item)
    try:
        text = apply_rule(method, item.prompt, req.get("options", {}), item.seed, variant)
    except Exception as exc:
        return Outcome(None, f"{method} failed: {type(exc).__name__}")
    return Outcome(GenerationResult(text=text, prompt_tokens=0, completion_tokens=0, finish_reason="stop"),
                   extra={"operation": eda.pick_operation(req["options"]["operations"], variant, item.seed)}
                   if method == "eda" else None)


def _clean(outcome: Outcome, structured: bool = False) -> Outcome:
    """The answer's one utterance; for a structured ``generate`` answer, the record's text."""
    if outcome.result is None:
        return outcome
    raw = outcome.result.text
    text = llm_output.clean(json.loads(raw)["text"] if structured else raw)
    if text == raw:
        return outcome
    return Outcome(dataclasses.replace(outcome.result, text=text), extra={"raw_text": raw})


def judge(spec: FilterSpec, items: list[Item], sources: list[Source]) -> tuple[list[Candidate], FilterResult]:
    """The quality filters over generated ``items`` against their dataset's ``sources``."""
    candidates = [Candidate(item_id=i.id, method=i.record["method"], label=i.record["label"], text=i.text or "",
                            source_row_id=i.record.get("source_row_id")) for i in items]
    encoder = get_encoder(get_settings().device)
    return candidates, FilterPipeline(spec, encoder.encode).run(candidates, sources)


def verdict_rows(job: Job, candidates: list[Candidate], verdicts: list[Verdict]) -> list[dict[str, Any]]:
    """Rows for ``AugmentationRepository.replace_verdicts``: one per judged item."""
    return [{"item_id": c.item_id, "job_id": job.id, "tenant_id": job.tenant_id, "accepted": v.accepted,
             "reason": v.reason, "similarity": v.similarity, "details": v.details}
            for c, v in zip(candidates, verdicts, strict=True)]


class AugmentationHandler(KindHandler):
    def run(self, gen: Generator, job: Job, items: list[Item]) -> list[Outcome]:
        return run_items(self, gen, job, items)

    def provenance(self, gen: Generator, job: Job, item: Item, outcome: Outcome, ctx: RunContext,
                   batch_size: int, generate_ms: float) -> dict[str, Any]:
        req = item.request or {}
        method = req.get("method")
        origin = {"method": method, "source_row_id": item.record.get("source_row_id"),
                  "label": item.record.get("label")}
        if method in LLM_METHODS:
            prov = super().provenance(gen, job, item, outcome, ctx, batch_size, generate_ms)
            if method == "generate":
                origin["shots"] = item.record.get("shots", [])
            return {**prov, **origin}
        prov = {
            "generator": RULES_GENERATOR, "factory_version": __version__, "options": req.get("options", {}),
            "prompt_sha256": item.prompt_sha256, "seed": item.seed, "job_seed": job.seed,
            "worker_host": socket.gethostname(), "worker_pid": os.getpid(), "chunk_id": ctx.chunk_id,
            "attempt": ctx.attempt, "batch_size": batch_size,
            "timings_ms": {"queue": round(ctx.queue_ms, 1), "generate": round(generate_ms, 1)},
        }
        if method == "eda":
            prov["synonyms"] = WORDNET_VERSION
        if outcome.extra:
            prov.update(outcome.extra)
        return {**prov, **origin}

    def finalize(self, session: Session, job: Job, store: ObjectStore) -> list[str]:
        outbox_ids = super().finalize(session, job, store)
        repo = AugmentationRepository(session)
        sources = [Source(r.row_id, r.label, r.text) for r in repo.source_rows(job.id)]
        items = list(repo.iter_succeeded_items(job.id))
        candidates, result = judge(FilterSpec.model_validate(job.options["filters"]), items, sources)
        repo.replace_verdicts(job.id, verdict_rows(job, candidates, result.verdicts))
        encoder = get_encoder(get_settings().device)
        rows = self._dataset_rows(job, sources, items, result)
        rejected = [self._rejected_row(c, v) for c, v in zip(candidates, result.verdicts, strict=True)
                    if not v.accepted]
        report = self._report(session, job, sources, items, candidates, result, encoder.describe(), rows)
        files = export.build_files(rows, rejected, export.render_card(report))
        for f in files:
            store.put_bytes(dataset_file_key(job.tenant_id, job.id, f.name), f.data, f.content_type)
        report["files"] = [{"name": f.name, "bytes": len(f.data)} for f in files]
        store.put_bytes(job_report_key(job.tenant_id, job.id), canonical_json(report).encode(),
                        "application/json")
        return outbox_ids

    # --- the dataset -------------------------------------------------------------------
    @staticmethod
    def _dataset_rows(job: Job, sources: list[Source], items: list[Item],
                      result: FilterResult) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = []
        if job.options.get("include_source", True):
            origin = canonical_json({"origin": "source dataset",
                                     "dataset_sha256": job.options["dataset"]["sha256"]})
            rows += [{"text": s.text, "label": s.label, "method": "original", "source_row_id": s.row_id,
                      "variant": None, "item_id": None, "provenance": origin, "ai_generated": False,
                      "digital_source_type": None} for s in sources]
        for item, verdict in zip(items, result.verdicts, strict=True):
            if verdict.accepted:
                prov = {**(item.provenance or {}), "similarity_to_source": verdict.similarity}
                mark = marking(item.provenance)
                rows.append({"text": item.text or "", "label": item.record["label"],
                             "method": item.record["method"], "source_row_id": item.record.get("source_row_id"),
                             "variant": item.variant, "item_id": item.id, "provenance": canonical_json(prov),
                             "ai_generated": mark.get("ai_generated", True),
                             "digital_source_type": mark.get("digital_source_type")})
        return rows

    @staticmethod
    def _rejected_row(c: Candidate, v: Verdict) -> dict[str, Any]:
        return {"item_id": c.item_id, "method": c.method, "label": c.label, "source_row_id": c.source_row_id,
                "text": c.text, "reason": v.reason, "similarity_to_source": v.similarity, "details": v.details}

    # --- the report --------------------------------------------------------------------
    def _report(self, session: Session, job: Job, sources: list[Source], items: list[Item],
                candidates: list[Candidate], result: FilterResult, embedding_model: dict[str, str],
                rows: list[dict[str, Any]]) -> dict[str, Any]:
        opts = job.options
        accepted = result.accepted_indices()
        dim = result.source_embeddings.shape[1]
        generated_emb = (np.stack([result.embeddings[i] for i in accepted]) if accepted
                         else np.zeros((0, dim), dtype=np.float32))
        dataset_emb = (np.concatenate([result.source_embeddings, generated_emb])
                       if opts.get("include_source", True) else generated_emb)
        llm_prov = next((i.provenance for i in items if i.record["method"] in LLM_METHODS and i.provenance), {})
        generated = len(candidates)
        return {
            "job_id": job.id, "object": "augmentation.report",
            "status": "partial" if job.cancel_requested_at is not None else "complete",
            "task": opts["task"], "seed": job.seed, "factory_version": __version__,
            "include_source": opts.get("include_source", True),
            "source": opts["dataset"],
            "model": {"name": job.model, "weights_sha256": llm_prov.get("weights_sha256"), "params": job.params,
                      "prompts_sha256": job.template_sha256},
            "synonyms": WORDNET_VERSION, "embedding_model": embedding_model,
            "items": {"total": job.item_count,
                      **{state.value: n for state, n in execution.item_counts(session, job.id).items()}},
            "generated": {"generated": generated, "accepted": len(accepted), "rejected": generated - len(accepted)},
            "acceptance_rate": round(len(accepted) / generated, 4) if generated else None,
            "methods": _method_rates(opts["methods"], candidates, result,
                                     AugmentationRepository(session).item_counts_by_method(job.id)),
            "filters": [s.as_dict() for s in result.stages],
            "rejected_by": dict(Counter(v.reason for v in result.verdicts if not v.accepted)),
            "diversity": {
                "source": diversity([s.text for s in sources], result.source_embeddings),
                "generated": diversity([candidates[i].text for i in accepted], generated_emb),
                "dataset": diversity([r["text"] for r in rows], dataset_emb),
            },
            "label_distribution": {
                "before": dict(Counter(s.label for s in sources)),
                "generated": dict(Counter(candidates[i].label for i in accepted)),
                "after": dict(Counter(r["label"] for r in rows)),
            },
            "rows": len(rows),
        }


def _method_rates(methods: list[dict[str, Any]], candidates: list[Candidate], result: FilterResult,
                  items_by_method: dict[str, dict[str, int]]) -> list[dict[str, Any]]:
    """Per method: items planned and how they ended, outputs generated, outputs accepted."""
    out = []
    for m in methods:
        name = m["method"]
        made = [i for i, c in enumerate(candidates) if c.method == name]
        ok = sum(result.verdicts[i].accepted for i in made)
        out.append({"method": name, "k": m["k"], "params": {k: v for k, v in m.items() if k not in ("method", "k")},
                    "items": items_by_method.get(name, {}), "generated": len(made), "accepted": ok,
                    "acceptance_rate": round(ok / len(made), 4) if made else None})
    return out
