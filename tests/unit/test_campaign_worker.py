"""The worker side of a campaign chunk with the fake generator: batching, regeneration, outcomes."""

from __future__ import annotations

from typing import Any

from factory.brands.schemas import BrandRules
from factory.campaigns.plan import CampaignPlan, MessagePlan, PinnedBrand, PinnedTemplate, VariantPlan
from factory.db.models import Item, Job
from factory.provenance.hashing import derive_seed
from workers.generators.base import GenerationRequest, GenerationResult
from workers.generators.fake import FakeGenerator
from workers.kinds.campaign import CampaignHandler

FOOTER = "Reply STOP to opt out."


def plan(max_attempts: int = 4) -> CampaignPlan:
    tpl = PinnedTemplate(name="t", version=1, sha256="0" * 64, system_prompt=None, source="Sale for {{ tier }}.",
                         variables={"tier": "string"})
    # One variant: several would be compared, and the fake's copies are near-twins (test_variants.py).
    sms = MessagePlan(channel="sms", template=tpl, variants=1, opening="Hi {{first_name}}!", control=None,
                      sms_max_segments=1, max_new_tokens={"text": 48})
    return CampaignPlan(
        name="c", mode="segment",
        brand=PinnedBrand(name="b", version=1, sha256="0" * 64,
                          rules=BrandRules(display_name="Trailhead", required_phrases={"sms": [FOOTER]})),
        messages=[sms], variants=[VariantPlan(variant_id="sms.v1", message=0, channel="sms")],
        segment_by=["tier"], merge_tags=["first_name"], name_tag="first_name", language="en",
        max_attempts=max_attempts, sampling={"temperature": 0.5, "top_p": 0.9, "repetition_penalty": 1.1},
        recipients=100, segments=5, audience_key="k",
    )


def job_and_items(p: CampaignPlan, units: int) -> tuple[Job, list[Item]]:
    job = Job(id="job_1", params={}, seed=1, template_sha256="0" * 64, options={"campaign": p.model_dump()})
    items = []
    for u in range(units):
        for v, variant in enumerate(p.variants):
            items.append(Item(id=f"itm_{u}_{v}", key=f"seg-{u}", variant=v, prompt="Sale for «vip».",
                              prompt_sha256="0" * 64, seed=derive_seed(1, f"seg-{u}", v),
                              request={"campaign": {"variant_id": variant.variant_id, "message": 0,
                                                    "merge": {"first_name": "Alexandrina"}}}))
    return job, items


class RecordingFake(FakeGenerator):
    def __init__(self) -> None:
        super().__init__("m")
        self.batches: list[list[GenerationRequest]] = []

    def generate(self, batch: Any) -> list[GenerationResult]:
        self.batches.append(list(batch))
        return super().generate(batch)


def test_failing_items_of_a_chunk_are_regenerated_together_with_new_seeds() -> None:
    p = plan()
    job, items = job_and_items(p, units=10)
    gen = RecordingFake()
    outcomes = CampaignHandler().run(gen, job, items)

    # One batched call per attempt, each holding every item still failing.
    assert len(gen.batches[0]) == 10
    assert all(len(b) <= len(a) for a, b in zip(gen.batches, gen.batches[1:], strict=False))
    assert all(r.prefill == "Hi {{first_name}}!" and r.stop == ("\n",) for b in gen.batches for r in b)
    # The fake leaves a placeholder for some seeds: those and only those were generated again.
    attempts = [o.extra["campaign"]["attempts"] for o in outcomes if o.extra]
    assert sum(len(b) for b in gen.batches[1:]) == sum(a - 1 for a in attempts) > 0
    assert len(gen.batches) == max(attempts)
    seeds = [r.seed for b in gen.batches for r in b]
    assert len(seeds) == len(set(seeds))  # every attempt of every item has its own seed

    for o in outcomes:
        assert o.result is not None and o.checks is not None and o.extra is not None
        info = o.extra["campaign"]
        assert info["attempts"] == len(info["history"]) <= 4
        if o.checks.status == "passed":
            assert o.checks.failed_checks == []
            assert o.checks.fields["text"].startswith("Hi {{first_name}}! Fresh autumn deals")
            assert o.checks.fields["text"].endswith(FOOTER)
            assert o.result.text == o.checks.fields["text"]
            assert "text:append_required" in info["repairs"]
        else:
            assert info["attempts"] == 4 and o.checks.failed_checks == ["text:placeholder"]
        for attempt in info["history"][:-1]:
            assert attempt["failed"] == ["text:placeholder"]
    assert sum(o.checks.status == "passed" for o in outcomes if o.checks) >= 9


def test_outcomes_are_reproducible_and_attempts_bounded() -> None:
    p = plan(max_attempts=1)
    job, items = job_and_items(p, units=6)
    first = CampaignHandler().run(RecordingFake(), job, items)
    again = CampaignHandler().run(RecordingFake(), job, items)
    assert [o.result.text for o in first if o.result] == [o.result.text for o in again if o.result]
    assert all(o.extra and o.extra["campaign"]["attempts"] == 1 for o in first)
    failed = [o for o in first if o.checks and o.checks.status == "failed"]
    assert all(o.checks and o.checks.failed_checks == ["text:placeholder"] for o in failed)
