"""Verify (kind ``verify``): regenerate an item from its record and compare it with what was recorded.

The verify job's one item carries a snapshot of the item to verify (factory/verify/service.py): its
rendered prompt, its own request, its record and its text. The request is rebuilt by the handler of
the item's own kind, with the recorded parameters and seed, and generated alone. Seeds are per row and
the batch is padded on the left, so on the same machine, model, versions, device and dtype a seeded item
reproduces byte for byte however large the batch it was first made in (what a batch changes is the
padding; over long outputs padding may change the last bits, see README).

The verdict goes into the regenerated item's provenance as ``verify``: ``result`` (``match`` when the
text is the same, byte for byte) and ``reasons``: every recorded fact of the environment that differs
now (weights sha256, generator, device, dtype, torch and transformers versions), a prompt that no
longer hashes to the recorded prompt sha256, and the first character at which the texts differ.
"""

from __future__ import annotations

from typing import Any

from factory.db.models import Item, Job
from factory.provenance.hashing import sha256_text
from workers.generators.base import GenerationRequest, Generator, GeneratorInfo
from workers.kinds.base import KindHandler, Outcome, generate_isolating

ENVIRONMENT = ("weights_sha256", "generator", "device", "dtype")
LIBRARIES = ("torch", "transformers")


class VerifyHandler(KindHandler):
    def requests(self, job: Job, items: list[Item]) -> list[GenerationRequest]:
        from workers.kinds import handler_for  # the registry imports this module

        out = []
        for item in items:
            target = item.request["target"] if item.request else {}
            record = target.get("record") or {}
            # A stand-in job and item of the verified item's kind, carrying its recorded parameters.
            source_job = Job(kind=target["kind"], params={}, system_prompt=job.system_prompt, model=job.model)
            request = {**(target.get("request") or {}), "params": dict(record.get("params") or job.params)}
            source = Item(prompt=item.prompt, seed=int(record.get("seed", item.seed)), request=request)
            out.extend(handler_for(target["kind"]).requests(source_job, [source]))
        return out

    def run(self, gen: Generator, job: Job, items: list[Item]) -> list[Outcome]:
        # Each alone, and recorded so (a chunk of a job's verification holds several items).
        outcomes = [generate_isolating(gen, [req])[0] for req in self.requests(job, items)]
        for outcome in outcomes:
            outcome.extra = {**(outcome.extra or {}), "batch_size": 1}
        for item, outcome in zip(items, outcomes, strict=True):
            target = (item.request or {}).get("target") or {}
            if outcome.result is None:
                continue
            verdict = compare(target.get("record") or {}, target.get("text") or "", gen.info, item.prompt,
                              outcome.result.text)
            outcome.extra = {**(outcome.extra or {}), "verify": {
                "item_id": target.get("item_id"), "job_id": target.get("job_id"), **verdict}}
        return outcomes


def compare(record: dict[str, Any], recorded_text: str, now: GeneratorInfo, prompt: str, text: str) -> dict[str, Any]:
    """``{"result": "match" | "mismatch", "reasons": [...]}``: the environment first, then the text."""
    reasons: list[dict[str, Any]] = []
    for name in ENVIRONMENT:
        if name in record and record[name] != getattr(now, "name" if name == "generator" else name):
            reasons.append({"field": name, "recorded": record[name],
                            "now": getattr(now, "name" if name == "generator" else name)})
    recorded_libs = record.get("libraries") or {}
    for lib in LIBRARIES:
        if recorded_libs.get(lib) != now.libraries.get(lib):
            reasons.append({"field": f"libraries.{lib}", "recorded": recorded_libs.get(lib),
                            "now": now.libraries.get(lib)})
    if record.get("prompt_sha256") and record["prompt_sha256"] != sha256_text(prompt):
        reasons.append({"field": "prompt_sha256", "recorded": record["prompt_sha256"], "now": sha256_text(prompt)})
    if text != recorded_text:
        at = next((i for i, (a, b) in enumerate(zip(text, recorded_text, strict=False)) if a != b),
                  min(len(text), len(recorded_text)))
        reasons.append({"field": "text", "at": at, "recorded": len(recorded_text), "now": len(text)})
    match = text == recorded_text and not reasons
    return {"result": "match" if match else "mismatch", "reasons": reasons}
