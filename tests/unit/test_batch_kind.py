"""The worker side of a batch chunk mixing chat and augment items: one batched model call for
everything that needs the model, rules for EDA, the augmentation kind's provenance."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from factory.augmentation.prompts import PROMPTS_SHA256
from factory.batches.lines import LineContext, expand, parse_line
from factory.config import Settings
from factory.db.models import Item, Job
from workers.generators.base import GenerationRequest, GenerationResult
from workers.generators.fake import FakeGenerator
from workers.kinds.augmentation import apply_rule
from workers.kinds.base import RunContext
from workers.kinds.batch import BatchHandler

MODEL = "smollm2-135m-instruct"
ROWS = [{"id": "r0", "text": "where is my parcel", "label": "track"},
        {"id": "r1", "text": "cancel my order please", "label": "cancel"}]


class RecordingGenerator(FakeGenerator):
    def __init__(self) -> None:
        super().__init__(MODEL)
        self.batches: list[list[GenerationRequest]] = []

    def generate(self, batch: Sequence[GenerationRequest]) -> list[GenerationResult]:
        self.batches.append(list(batch))
        return [GenerationResult(text=f"Sure! Here it is: answer {n}\nExtra line", prompt_tokens=3,
                                 completion_tokens=2, finish_reason="stop") for n in range(len(batch))]


def _items(lines: list[dict[str, Any]]) -> list[Item]:
    ctx = LineContext(settings=Settings(), batch_seed=5)
    items: list[Item] = []
    for line_no, line in enumerate(lines, 1):
        for spec in expand(ctx, line_no, parse_line(json.dumps(line).encode())):
            # as the row stores them: record/request from their JSON text when the line built that
            record = json.loads(spec.record_json) if spec.record_json is not None else spec.record
            request = json.loads(spec.request_json) if spec.request_json is not None else spec.request
            items.append(Item(id=f"itm_{len(items)}", key=spec.key, variant=spec.variant, record=record,
                              prompt=spec.prompt, prompt_sha256=spec.prompt_sha256, request=request,
                              seed=spec.seed))
    return items


def test_a_mixed_chunk_makes_one_model_call_and_runs_rules_locally() -> None:
    items = _items([
        {"custom_id": "c1", "method": "POST", "url": "/v1/chat/completions",
         "body": {"model": MODEL, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 9}},
        {"custom_id": "a1", "method": "POST", "url": "/v1/augment",
         "body": {"dataset": {"rows": ROWS}, "params": {"seed": 3, "max_new_tokens": 20},
                  "methods": [{"method": "paraphrase"}, {"method": "eda", "k": 2}]}},
    ])
    assert [(i.key, (i.request or {}).get("method")) for i in items] == [
        ("c1", None), ("a1", "paraphrase"), ("a1", "paraphrase"), ("a1", "eda"), ("a1", "eda"), ("a1", "eda"),
        ("a1", "eda")]
    job = Job(id="job_1", model=MODEL, params={"max_new_tokens": 64, "temperature": 1.0, "top_p": 1.0,
                                               "repetition_penalty": 1.1}, seed=5, template_sha256="0" * 64)
    gen = RecordingGenerator()
    handler = BatchHandler()
    outcomes = handler.run(gen, job, items)

    [batch] = gen.batches  # chat and paraphrase items together, EDA never reaches the model
    assert [r.max_new_tokens for r in batch] == [9, 20, 20]
    assert batch[1].messages[-1]["content"].endswith("Sentence: where is my parcel")
    assert [r.seed for r in batch] == [i.seed for i in items[:3]]
    texts = [o.result.text if o.result else None for o in outcomes]
    assert texts[0] == "Sure! Here it is: answer 0\nExtra line"  # chat answers are left as they are
    assert texts[1] != "Sure! Here it is: answer 1\nExtra line"  # paraphrases are cleaned to one utterance
    assert outcomes[1].extra == {"raw_text": "Sure! Here it is: answer 1\nExtra line"}
    for item, text in zip(items[3:], texts[3:], strict=True):
        assert item.request is not None
        assert text == apply_rule("eda", item.prompt, item.request["options"], item.seed, item.record["variant"])

    ctx = RunContext(chunk_id="chk_1", attempt=1, queue_ms=0.0)
    provs = [handler.provenance(gen, job, i, o, ctx, len(items), 1.0) for i, o in zip(items, outcomes, strict=True)]
    assert "method" not in provs[0] and provs[0]["template_sha256"] == "0" * 64
    assert (provs[1]["method"], provs[1]["label"], provs[1]["source_row_id"]) == ("paraphrase", "track", "r0")
    assert provs[1]["template_sha256"] == PROMPTS_SHA256 and provs[1]["params"]["max_new_tokens"] == 20
    assert provs[3]["generator"] == "rules" and provs[3]["method"] == "eda" and "operation" in provs[3]
