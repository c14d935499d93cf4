"""The kinds on structured outputs: a campaign copy as one JSON-schema request, augmentation's {text, label}."""

from __future__ import annotations

import json

import pytest

from factory.augmentation import prompts
from factory.augmentation.schemas import AugmentationJobCreate
from factory.augmentation.service import plan_items
from factory.augmentation.sources import SourceRow
from factory.campaigns import structured_copy
from factory.campaigns.plan import MessagePlan, PinnedTemplate
from factory.provenance.hashing import schema_sha256
from tests.unit.test_campaign_worker import FOOTER, RecordingFake, job_and_items, plan
from workers.kinds.campaign import CampaignHandler

TPL = PinnedTemplate(name="t", version=1, sha256="0" * 64, system_prompt=None, source="x", variables={})


def email(opening: str | None = "Hi {{first_name}},") -> MessagePlan:
    return MessagePlan(channel="email", template=TPL, variants=1, opening=opening, control=None,
                       sms_max_segments=1, max_new_tokens={})


def test_copy_schema_holds_every_field_of_the_channel_bounded_where_the_channel_is() -> None:
    assert structured_copy.copy_schema(email()) == {
        "type": "object",
        "properties": {"subject": {"type": "string", "minLength": 1, "maxLength": 60},
                       "preheader": {"type": "string", "minLength": 1, "maxLength": 100},
                       "body": {"type": "string", "minLength": 1}},
        "required": ["subject", "preheader", "body"], "additionalProperties": False,
    }
    sms = email().model_copy(update={"channel": "sms", "sms_max_segments": 2})
    assert structured_copy.copy_schema(sms)["properties"] == {"text": {"type": "string", "minLength": 1,
                                                                      "maxLength": 320}}


def test_copy_request_shows_a_worked_json_answer_and_asks_for_the_opening() -> None:
    p = plan().model_copy(update={"mode": "recipient", "generation": "json"})
    req = structured_copy.copy_request(p, email(), "Brief «vip».", {"first_name": "Ana"})
    system, example_ask, example_answer, ask = req.messages
    assert system["role"] == "system" and ask == {
        "role": "user",
        "content": "Brief «vip».\nWrite the email as one JSON object with the fields subject, preheader, body.\n"
                   "subject: the email subject line: at most 8 words.\npreheader: the email preheader: one short "
                   "sentence.\nbody: the email body: two or three short sentences.\nThe body starts with: Hi Ana,"}
    answer = json.loads(example_answer["content"])
    assert list(answer) == ["subject", "preheader", "body"] and answer["body"].startswith("Hi Maria, we hope")
    assert example_ask["content"].endswith("The body starts with: Hi Maria,")
    assert req.schema_sha256 == schema_sha256(req.schema) and json.loads(req.schema_json) == req.schema
    assert req.max_new_tokens == 20 + 32 + 80 + 3 * structured_copy.JSON_TOKENS_PER_FIELD + 4


def test_parse_copy_hands_the_repairs_what_the_field_path_would() -> None:
    p = plan().model_copy(update={"mode": "recipient", "generation": "json"})
    answer = json.dumps({"subject": "S" * 60, "preheader": "Short.", "body": "Hi Ana, lovely boots."})
    raw, finish = structured_copy.parse_copy(p, email(), {"first_name": "Ana"}, answer)
    assert raw == {"subject": "S" * 60, "preheader": "Short.", "body": "lovely boots."}
    assert finish == {"subject": "length", "preheader": "stop", "body": "stop"}  # 60 = the subject's maxLength
    raw, _ = structured_copy.parse_copy(p, email(), {"first_name": "Ana"}, json.dumps(
        {"subject": "s", "preheader": "p", "body": "Dear Ana, boots."}))
    assert raw["body"] == "Dear Ana, boots."  # no opening to strip: the repairs put it in front
    for bad in ("[]", '{"subject": "s"}', '{"subject": 1, "preheader": "p", "body": "b"}', "not json"):
        with pytest.raises(ValueError):
            structured_copy.parse_copy(p, email(), {}, bad)


def test_json_campaign_asks_one_constrained_request_per_copy_and_still_checks_it() -> None:
    p = plan().model_copy(update={"generation": "json"})
    job, items = job_and_items(p, units=10)
    gen = RecordingFake()
    outcomes = CampaignHandler().run(gen, job, items)

    first = gen.batches[0]
    assert len(first) == 10  # one request per copy, not per field
    schema = structured_copy.copy_schema(p.messages[0])
    assert all(r.response_format is not None and r.response_format.key == schema_sha256(schema) and
               r.prefill is None for b in gen.batches for r in b)
    seeds = [r.seed for b in gen.batches for r in b]
    assert len(seeds) == len(set(seeds))
    attempts = [o.extra["campaign"]["attempts"] for o in outcomes if o.extra]
    assert sum(len(b) for b in gen.batches) == sum(attempts)  # a failing copy is asked for again, whole
    passed = [o for o in outcomes if o.checks and o.checks.status == "passed"]
    assert len(passed) >= 8
    for o in passed:
        assert o.checks is not None and o.extra is not None
        assert o.checks.fields["text"].startswith("Hi {{first_name}}! Fresh autumn deals")
        assert o.checks.fields["text"].endswith(FOOTER)
        assert set(o.extra["campaign"]["request_sha256"]) == {"copy", "schema"}
        assert o.extra["campaign"]["request_sha256"]["schema"] == schema_sha256(schema)
    for o in outcomes:
        if o.checks and o.checks.status == "failed":
            assert o.checks.failed_checks == ["text:placeholder"]


def _augmentation(output: str) -> AugmentationJobCreate:
    return AugmentationJobCreate.model_validate({
        "kind": "augmentation",
        "dataset": {"rows": [{"id": f"r{i}", "text": f"where is order {i}", "label": "track_order"}
                             for i in range(3)]},
        "methods": [{"method": "generate", "k": 2, "shots": 2, "output": output}],
        "params": {"max_new_tokens": 40, "temperature": 0.7, "top_p": 0.9, "seed": 3},
    })


def test_structured_generate_items_carry_the_record_schema_and_room_for_its_json() -> None:
    rows = [SourceRow(row_id=f"r{i}", text=f"where is order {i}", label="track_order") for i in range(3)]
    llm, _ = plan_items(_augmentation("json"), rows, job_seed=3)
    plain, _ = plan_items(_augmentation("text"), rows, job_seed=3)
    assert len(llm) == len(plain) == 2
    for item, free in zip(llm, plain, strict=True):
        fmt = item.request["response_format"]
        assert fmt["schema"]["properties"]["label"] == {"const": "track_order"}
        assert fmt["schema_sha256"] == schema_sha256(fmt["schema"])
        assert item.request["params"] == {"max_new_tokens": 40 + prompts.RECORD_TOKENS}
        shots = [json.loads(m["content"]) for m in item.request["messages"] if m["role"] == "assistant"]
        assert [s["label"] for s in shots] == ["track_order"] * 2
        assert [s["text"] for s in shots] == [m["content"] for m in free.request["messages"]
                                              if m["role"] == "assistant"]  # the same shots, as records
        assert "response_format" not in free.request and "params" not in free.request
