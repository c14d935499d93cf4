"""Campaigns (kind ``campaign``): checked copy per (recipient or segment, variant).

Each copy is generated field by field (or, with ``generation: "json"``, as one
JSON-schema-constrained object: factory/campaigns/structured_copy.py), then repaired and
checked (factory/campaigns/copywork.py); whatever fails is generated again with new seeds,
every failing item of the chunk together in one batched call per attempt, up to the
plan's attempts (``options["campaign"]`` holds the plan). The finalize step writes the
campaign's report and its ESP exports.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from factory.campaigns import copywork, structured_copy, variants
from factory.campaigns.finalize import write_report_and_exports
from factory.campaigns.plan import CampaignPlan
from factory.db.models import Item, Job
from factory.jobs.execution import CheckOutcome
from factory.storage import ObjectStore
from workers.generators.base import GenerationRequest, GenerationResult, Generator, OutputFormat
from workers.kinds.base import KindHandler, Outcome, generate_isolating


class CampaignHandler(KindHandler):
    def run(self, gen: Generator, job: Job, items: list[Item]) -> list[Outcome]:
        plan = CampaignPlan.model_validate(job.options["campaign"])
        works = [copywork.start(plan, item.id, item.request["campaign"] if item.request else {}, item.prompt,
                                item.seed, item.key) for item in items]
        for attempt in range(plan.max_attempts):
            pending = [w for w in works if not w.done]
            if not pending:
                break
            self._attempt(gen, plan, pending)
            variants.refuse_twins(works, last_attempt=attempt == plan.max_attempts - 1)
        return [self._outcome(plan, w) for w in works]

    def _attempt(self, gen: Generator, plan: CampaignPlan, works: list[copywork.CopyWork]) -> None:
        if plan.generation == "json":
            self._attempt_json(gen, plan, works)
        else:
            self._attempt_fields(gen, plan, works)

    def _attempt_json(self, gen: Generator, plan: CampaignPlan, works: list[copywork.CopyWork]) -> None:
        """One batched generation of one structured request per copy still to do, then repair and check.
        A copy that failed any check is asked for again whole."""
        reqs = []
        for work in works:
            cr = structured_copy.copy_request(plan, work.message, work.brief, work.merge)
            reqs.append(GenerationRequest(
                messages=cr.messages, seed=copywork.field_seed(work, structured_copy.COPY),
                max_new_tokens=cr.max_new_tokens, temperature=plan.sampling["temperature"],
                top_p=plan.sampling["top_p"], repetition_penalty=plan.sampling["repetition_penalty"],
                response_format=OutputFormat(cr.schema_json, cr.schema_sha256),
            ))
        for work, outcome in zip(works, generate_isolating(gen, reqs), strict=True):
            work.requests += 1
            result = outcome.result
            error = outcome.error if result is None else result.error
            if result is not None:
                work.prompt_tokens += result.prompt_tokens
                work.completion_tokens += result.completion_tokens
            work.raw, work.finish = {}, {}
            if result is not None and error is None:
                try:
                    work.raw, work.finish = structured_copy.parse_copy(plan, work.message, work.merge, result.text)
                except ValueError as exc:
                    error = str(exc)
            if error is not None:
                work.errors.append(f"{structured_copy.COPY}: {error}")
        for work in works:
            copywork.evaluate(plan, work)

    def _attempt_fields(self, gen: Generator, plan: CampaignPlan, works: list[copywork.CopyWork]) -> None:
        """One batched generation for every field still to do in the chunk, then repair and check."""
        wanted: list[tuple[copywork.CopyWork, str]] = []
        reqs: list[GenerationRequest] = []
        for work in works:
            for name, fr, seed in copywork.requests_for(plan, work):
                wanted.append((work, name))
                reqs.append(GenerationRequest(
                    messages=fr.messages, seed=seed, max_new_tokens=fr.max_new_tokens, stop=fr.stop,
                    prefill=fr.prefill, temperature=plan.sampling["temperature"], top_p=plan.sampling["top_p"],
                    repetition_penalty=plan.sampling["repetition_penalty"],
                ))
        for (work, name), outcome in zip(wanted, generate_isolating(gen, reqs), strict=True):
            work.requests += 1
            if outcome.result is None:
                work.raw.pop(name, None)
                work.errors.append(f"{name}: {outcome.error}")
                continue
            work.raw[name] = outcome.result.text
            work.finish[name] = outcome.result.finish_reason
            work.prompt_tokens += outcome.result.prompt_tokens
            work.completion_tokens += outcome.result.completion_tokens
        for work in works:
            copywork.evaluate(plan, work)

    def _outcome(self, plan: CampaignPlan, work: copywork.CopyWork) -> Outcome:
        extra: dict[str, Any] = {"campaign": {
            "variant_id": work.variant_id, "channel": work.message.channel,
            "template": work.message.template.name, "template_version": work.message.template.version,
            "brand": plan.brand.name, "brand_version": plan.brand.version,
            "request_sha256": copywork.request_fingerprints(plan, work),
            **copywork.summary(work),
        }}
        if work.copy is None or not work.raw:
            return Outcome(None, "; ".join(work.errors) or "generation failed", extra,
                           CheckOutcome(status="failed", failed_checks=work.failed or ["generation"], fields={}))
        fields = copywork.final_fields(plan, work)
        finish = "length" if "length" in work.finish.values() else "stop"
        result = GenerationResult(text=copywork.render_text(work.message.channel, fields),
                                  prompt_tokens=work.prompt_tokens, completion_tokens=work.completion_tokens,
                                  finish_reason=finish)
        status = "passed" if not work.failed else "failed"
        return Outcome(result, None, extra, CheckOutcome(status=status, failed_checks=work.failed, fields=fields))

    def finalize(self, session: Session, job: Job, store: ObjectStore) -> list[str]:
        outbox_ids = super().finalize(session, job, store)
        write_report_and_exports(session, job, store)
        return outbox_ids
