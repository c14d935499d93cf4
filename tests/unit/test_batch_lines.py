"""Batch lines: parsing, validation codes, expansion into items, and the output/error line shapes."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from typing import Any

import pytest

from factory.batches.lines import LineContext, LineError, PersonalizeBody, expand, parse_line
from factory.batches.output import ERROR, OUTPUT, Tally, group_lines, render_line
from factory.chat.seeds import choice_seeds
from factory.config import Settings
from factory.db.models import Item, ItemState
from factory.provenance.hashing import derive_seed
from factory.provenance.marking import TRAINED_ALGORITHMIC_MEDIA, mark

MODEL = "smollm2-135m-instruct"
CANARY = "CANARY-b41c-DO-NOT-ECHO"


def ctx(**kw: Any) -> LineContext:
    return LineContext(settings=Settings(**kw), batch_seed=99)


def chat_line(**body: Any) -> bytes:
    return json.dumps({"custom_id": "c1", "method": "POST", "url": "/v1/chat/completions",
                       "body": {"model": MODEL, "messages": [{"role": "user", "content": "Hi"}], **body}}).encode()


def test_line_parses_into_the_body_its_url_selects() -> None:
    line = parse_line(chat_line())
    assert line == {"custom_id": "c1", "method": "POST", "url": "/v1/chat/completions",
                    "body": {"model": MODEL, "messages": [{"role": "user", "content": "Hi"}]}}
    personalize = parse_line(_line("/v1/personalize", {"template": "Hi", "audience": [{"id": "a"}]}))
    assert isinstance(personalize["body"], PersonalizeBody) and personalize["body"].kind == "personalization"


def _expand(raw: bytes, context: LineContext | None = None, custom_id: str = "c1") -> list[Any]:
    line = parse_line(raw)
    line["custom_id"] = custom_id
    return expand(context or ctx(), 4, line)


@pytest.mark.parametrize(("raw", "code", "param"), [
    (b"{not json", "invalid_json_line", None),
    (b"[1, 2]", "invalid_json_line", None),
    (b'{"custom_id": "a", "method": "POST", "url": "/v1/chat/completions"}', "missing_required_parameter", "body"),
    (b'{"custom_id": "a", "method": "GET", "url": "/v1/chat/completions", "body": {}}', "invalid_method", "method"),
    (b'{"custom_id": "a", "method": "POST", "url": "/v1/embeddings", "body": {}}', "invalid_url", "url"),
    (b'{"custom_id": 7, "method": "POST", "url": "/v1/chat/completions", "body": {}}', "invalid_request", "custom_id"),
    (b'{"custom_id": "a", "method": "POST", "url": "/v1/chat/completions", "body": []}', "invalid_request", "body"),
    (b'{"custom_id": "a", "method": "POST", "url": "/v1/augment", "body": {}, "x": 1}', "invalid_request", "x"),
    (b'{"custom_id": "a", "method": "POST", "body": {}}', "missing_required_parameter", "url"),
    (b'{"custom_id": "", "method": "POST", "url": "/v1/augment", "body": {}}', "invalid_request", "custom_id"),
    (b'"just a string"', "invalid_json_line", None),
])
def test_envelope_errors_carry_a_code_and_the_param(raw: bytes, code: str, param: str | None) -> None:
    with pytest.raises(LineError) as info:
        parse_line(raw.replace(b'"/v1/embeddings"', b'"/v1/embeddings-' + CANARY.encode() + b'"'))
    assert (info.value.code, info.value.param) == (code, param)
    assert CANARY not in info.value.message


@pytest.mark.parametrize(("body", "code", "param"), [
    ({"model": "gpt-9"}, "model_not_found", "body.model"),
    ({"temperature": 3}, "invalid_request", "body.temperature"),
    ({"max_tokens": 0}, "invalid_request", "body.max_tokens"),
    ({"n": 9}, "invalid_request", "body.n"),
    ({"stream": True}, "invalid_request", "body.stream"),
    ({"tools": []}, "invalid_request", "body.tools"),
    ({"messages": [{"role": "robot", "content": CANARY}]}, "invalid_request", "body.messages.0.role"),
    ({"messages": []}, "invalid_request", "body.messages"),
])
def test_chat_body_errors_name_the_param_and_never_echo(body: dict[str, Any], code: str, param: str) -> None:
    with pytest.raises(LineError) as info:
        _expand(chat_line(**body))
    assert (info.value.code, info.value.param) == (code, param)
    assert CANARY not in info.value.message


def _line(url: str, body: dict[str, Any]) -> bytes:
    return json.dumps({"custom_id": "x", "method": "POST", "url": url, "body": body}).encode()


def test_chat_line_expands_to_n_items_with_request_and_seeds() -> None:
    specs = _expand(chat_line(n=3, max_tokens=12, temperature=0.5, seed=42, stop="END",
                              messages=[{"role": "developer", "content": "Be brief."},
                                        {"role": "user", "content": [{"type": "text", "text": "Hi"}]}]))
    assert [s.variant for s in specs] == [0, 1, 2]
    assert specs[0].seed == 42 and specs[1].seed == derive_seed(42, "choice", 1)
    assert specs[0].request_json is not None
    assert json.loads(specs[0].request_json) == {"messages": [{"role": "system", "content": "Be brief."},
                                             {"role": "user", "content": "Hi"}],
                                "params": {"max_new_tokens": 12, "temperature": 0.5, "top_p": 1.0,
                                           "repetition_penalty": 1.1},
                                "stop": ["END"]}
    assert specs[0].record_json is not None and specs[0].prompt == "Hi"
    assert json.loads(specs[0].record_json) == {"line": 4, "url": "/v1/chat/completions"}
    assert specs[0].key == "c1"


@pytest.mark.parametrize("body", [
    {"messages": [{"role": "user", "content": "Hi"}]},
    {"messages": [{"role": "system", "content": "S"}, {"role": "user", "content": "é \u2028 \"q\""}],
     "temperature": 0.7, "max_tokens": 5, "stop": "END"},
    {"messages": [{"role": "developer", "content": "D"}, {"role": "user", "content": [{"type": "text", "text": "a"},
                                                                                     {"type": "text", "text": "b"}]}],
     "max_completion_tokens": 9, "top_p": 0.5, "repetition_penalty": 1.3, "stop": ["x", "y"]},
    {"messages": [{"role": "user", "content": "Hi", "name": "ann"}, {"role": "assistant", "content": "Yo"}],
     "stop": None, "temperature": 0},
])
def test_chat_request_json_is_what_the_serializer_writes(body: dict[str, Any]) -> None:
    """The chat fast path builds the request JSON and the prompt hash without the generic helpers:
    byte for byte the same as serializing {"messages", "params", "stop"} (and as the synchronous endpoint)."""
    from pydantic_core import to_json

    from factory.chat import schemas as chat_schemas

    context = ctx()
    for _ in range(2):  # the second line reuses the cached params/stop JSON
        line = parse_line(_line("/v1/chat/completions", {"model": MODEL, **body}))
        req = line["body"]
        (spec,) = expand(context, 1, line)
        messages = chat_schemas.generation_messages(req)  # type: ignore[arg-type]
        expected = {"messages": messages, "params": chat_schemas.generation_params(req),  # type: ignore[arg-type]
                    "stop": chat_schemas.stop_list(req)}  # type: ignore[arg-type]
        assert spec.request_json == to_json(expected).decode()
        assert spec.prompt_sha256 == chat_schemas.messages_sha256(messages)
        assert spec.prompt == chat_schemas.last_user_message(messages)


def test_chat_without_seed_derives_from_batch_seed_and_custom_id() -> None:
    assert choice_seeds(None, 99, "c1", 2) == [derive_seed(99, "c1", 0), derive_seed(99, "c1", 1)]
    assert choice_seeds(None, 99, "c1", 1) != choice_seeds(None, 99, "c2", 1)


def test_one_model_per_batch() -> None:
    context = ctx()
    _expand(chat_line(), context, "a")
    assert context.model == MODEL
    context.model = "other-model"
    with pytest.raises(LineError) as info:
        _expand(chat_line(), context, "b")
    assert info.value.code == "mismatched_model"


def test_personalize_line_renders_every_recipient_and_variant() -> None:
    body = {"template": "Hi {{ name }}", "audience": [{"id": "r1", "name": "Ana"}, {"id": "r2", "name": "Ben"}],
            "variants": 2, "params": {"seed": 5, "max_new_tokens": 8}, "system_prompt": "Short."}
    specs = _expand(_line("/v1/personalize", body), custom_id="p1")
    assert [(s.record["recipient"], s.record["variant"], s.variant) for s in specs] == [
        ("r1", 0, 0), ("r1", 1, 1), ("r2", 0, 2), ("r2", 1, 3)]
    assert specs[2].prompt == "Hi Ben"
    assert specs[2].request is not None and specs[2].request["messages"] == [
        {"role": "system", "content": "Short."}, {"role": "user", "content": "Hi Ben"}]
    # The same seeds as the job API would use for this body.
    assert specs[3].seed == derive_seed(5, "r2", 1)


@pytest.mark.parametrize(("body", "param"), [
    ({"template": "Hi {{ nick }}", "audience": [{"id": "r1", "name": CANARY}]}, "body.audience[0]"),
    ({"template": "Hi {{ name", "audience": [{"id": "r1", "name": CANARY}]}, "body.template"),
    ({"template": "Hi", "audience": []}, "body.audience"),
    ({"template": "Hi", "audience": [{"id": "r1"}], "kind": "other"}, "body.kind"),
])
def test_personalize_errors(body: dict[str, Any], param: str) -> None:
    with pytest.raises(LineError) as info:
        _expand(_line("/v1/personalize", body))
    assert info.value.param == param and CANARY not in info.value.message


ROWS = [{"id": "r0", "text": "where is my parcel", "label": "track"},
        {"id": "r1", "text": "cancel my order please", "label": "cancel"},
        {"id": "r2", "text": "has my package shipped yet", "label": "track"},
        {"id": "r3", "text": "I want to cancel the purchase", "label": "cancel"}]
AUGMENT_BODY: dict[str, Any] = {"dataset": {"rows": ROWS}, "params": {"seed": 7, "max_new_tokens": 20},
                                "methods": [{"method": "eda", "k": 2}, {"method": "paraphrase", "k": 1}]}


def test_augment_line_plans_the_items_the_job_api_would() -> None:
    from factory.augmentation import service as augmentation_service
    from factory.augmentation.schemas import AugmentationJobCreate

    context = ctx()
    specs = _expand(_line("/v1/augment", AUGMENT_BODY), context, custom_id="a1")
    assert context.model == MODEL
    # LLM items first (as the job API plans them), then the rule items; variants number the line's items.
    assert [(s.record["method"], s.record["source_row_id"], s.record["variant"]) for s in specs] == [
        ("paraphrase", f"r{r}", 0) for r in range(4)] + [("eda", f"r{r}", k) for r in range(4) for k in range(2)]
    assert [s.variant for s in specs] == list(range(12)) and {s.key for s in specs} == {"a1"}
    job_body = AugmentationJobCreate.model_validate({"kind": "augmentation", **AUGMENT_BODY})
    job_plan = augmentation_service.plan(Settings(), job_body, 7,
                                         augmentation_service.load_inline_rows(Settings(), job_body.dataset))
    assert [s.seed for s in specs] == [job_plan.seed_of(p) for p in job_plan.items]
    assert specs[5].seed == derive_seed(7, "eda:r0", 1)
    para, eda = specs[0], specs[4]
    assert para.record == {"line": 4, "url": "/v1/augment", "method": "paraphrase", "label": "track",
                           "source_row_id": "r0", "source_text": "where is my parcel", "variant": 0,
                           "augment_line": {"sources": [[r["id"], r["label"], r["text"]] for r in ROWS],
                                            "filters": job_plan_filters(), "include_source": True}}
    assert para.request is not None and para.request["method"] == "paraphrase"
    assert para.request["messages"][-1]["content"].endswith("Sentence: where is my parcel")
    assert para.request["params"] == {"max_new_tokens": 20, "temperature": 0.7, "top_p": 0.95,
                                      "repetition_penalty": 1.1}
    assert eda.request == {"method": "eda", "options": {"alpha": 0.1,
                                                        "operations": ["synonym", "insert", "swap", "delete"]}}
    assert eda.prompt == "where is my parcel" and "augment_line" not in eda.record and eda.error is None


def job_plan_filters() -> dict[str, Any]:
    from factory.augmentation.schemas import FilterSpec

    return FilterSpec().model_dump()


def test_augment_line_without_seed_draws_per_custom_id() -> None:
    body = {**AUGMENT_BODY, "params": {}}
    a = _expand(_line("/v1/augment", body), custom_id="a1")
    b = _expand(_line("/v1/augment", body), custom_id="a2")
    assert [s.seed for s in a] != [s.seed for s in b]
    assert [s.seed for s in a] == [s.seed for s in _expand(_line("/v1/augment", body), custom_id="a1")]


@pytest.mark.parametrize(("change", "code", "param"), [
    ({"records": []}, "invalid_request", "body.records"),                       # unknown field
    ({"kind": "personalization"}, "invalid_request", "body.kind"),
    ({"dataset": {"rows": [{"id": "a", "text": CANARY, "label": "x"}], "content": "eA=="}},
     "invalid_request", "body.dataset"),                                        # two sources
    ({"dataset": {"rows": [{"id": "a", "txt": CANARY, "label": "x"}]}}, "invalid_request", "body.dataset.text_field"),
    ({"dataset": {"rows": [{"id": "a", "text": CANARY, "label": ""}]}}, "invalid_request", "body.dataset.label_field"),
    ({"dataset": {"content": CANARY, "format": "csv"}}, "invalid_request", "body.dataset.content"),
    ({"methods": [{"method": CANARY}]}, "invalid_request", "body.methods.0.method"),
    ({"methods": [{"method": "eda", "k": 99}]}, "invalid_request", "body.methods.0.k"),
    ({"methods": [{"method": "eda", "alpha": CANARY}]}, "invalid_request", "body.methods.0.alpha"),
    ({"methods": []}, "invalid_request", "body.methods"),
    ({"labels": {"refund": CANARY}}, "invalid_request", "body.labels"),
    ({"filters": {"similarity_band": {"min": 0.9, "max": 0.1}}}, "invalid_request", "body.filters.similarity_band"),
    ({"model": "gpt-9"}, "model_not_found", "body.model"),
    ({"dataset": {"file_id": "file_" + "0" * 28, "format": "csv"}}, "invalid_request", "body.dataset.file_id"),
])
def test_augment_line_errors_name_the_param_and_never_echo(change: dict[str, Any], code: str, param: str) -> None:
    with pytest.raises(LineError) as info:
        _expand(_line("/v1/augment", {**AUGMENT_BODY, **change}))
    assert (info.value.code, info.value.param) == (code, param)
    assert CANARY not in info.value.message


def test_augment_line_must_use_the_batch_model() -> None:
    context = ctx()
    context.model = "other-model"
    with pytest.raises(LineError) as info:
        _expand(_line("/v1/augment", {**AUGMENT_BODY, "model": MODEL}), context)
    assert (info.value.code, info.value.param) == ("mismatched_model", "body.model")


def test_augment_line_too_many_items_for_the_settings() -> None:
    with pytest.raises(LineError) as info:
        _expand(_line("/v1/augment", {**AUGMENT_BODY, "methods": [{"method": "eda", "k": 16}]}),
                ctx(max_dataset_rows=4, max_variants=2))
    assert (info.value.code, info.value.param) == ("invalid_request", "body.methods")


def _item(key: str, variant: int, state: ItemState, *, url: str = "/v1/chat/completions", text: str = "t",
          error: str | None = None, n: int = 0) -> Item:
    provenance = {"prompt_tokens": 5, "completion_tokens": 3, "finish_reason": "length", "weights_sha256": "ab" * 32}
    return Item(id=f"itm_{n:028x}", key=key, variant=variant, state=state, text=text, error=error,
                record={"line": 1, "url": url, "recipient": "r1", "variant": variant},
                provenance=mark(provenance, text) if state == ItemState.SUCCEEDED else provenance,
                finished_at=datetime(2026, 11, 23, tzinfo=UTC))


def test_output_line_is_the_openai_shape_with_n_choices() -> None:
    tally = Tally()
    kind, line = render_line([_item("c1", 0, ItemState.SUCCEEDED, text="A", n=1),
                              _item("c1", 1, ItemState.SUCCEEDED, text="B", n=2)], MODEL, expired=False, tally=tally)
    out = json.loads(line)
    assert kind == OUTPUT and list(out) == ["id", "custom_id", "response", "error", "provenance"]
    assert out["id"] == f"batch_req_{1:028x}" and out["custom_id"] == "c1" and out["error"] is None
    body = out["response"]["body"]
    assert out["response"]["status_code"] == 200 and out["response"]["request_id"] == f"req_{1:028x}"
    assert body["object"] == "chat.completion" and body["model"] == MODEL
    assert [(c["index"], c["message"]["content"], c["finish_reason"]) for c in body["choices"]] == [
        (0, "A", "length"), (1, "B", "length")]
    assert body["usage"] == {"prompt_tokens": 5, "completion_tokens": 6, "total_tokens": 11}
    assert (tally.completed, tally.input_tokens, tally.output_tokens) == (1, 5, 6)
    # Each text marked as machine-made, with its hash (ours; the SDK ignores the key).
    assert out["provenance"] == [
        {"item_id": f"itm_{n:028x}", "ai_generated": True, "digital_source_type": TRAINED_ALGORITHMIC_MEDIA,
         "content_sha256": hashlib.sha256(text.encode()).hexdigest()} for n, text in ((1, "A"), (2, "B"))]


def test_the_sdk_parses_an_output_body() -> None:
    from openai.types.chat import ChatCompletion

    _, line = render_line([_item("c1", 0, ItemState.SUCCEEDED)], MODEL, expired=False) or ("", "")
    completion = ChatCompletion.model_validate(json.loads(line)["response"]["body"])
    assert completion.choices[0].message.content == "t"


def test_error_lines() -> None:
    pending = render_line([_item("c", 0, ItemState.SUCCEEDED), _item("c", 1, ItemState.PENDING)], MODEL,
                          expired=False)
    assert pending is None
    kind, line = render_line([_item("c", 0, ItemState.CANCELLED)], MODEL, expired=True) or ("", "")
    assert kind == ERROR and json.loads(line)["error"]["code"] == "batch_expired"
    assert json.loads(line)["response"] is None
    _, line = render_line([_item("c", 0, ItemState.SUCCEEDED), _item("c", 1, ItemState.CANCELLED)], MODEL,
                          expired=False) or ("", "")
    assert json.loads(line)["error"]["code"] == "batch_cancelled"
    # A code the server attaches to a line it accepted but cannot run is a client error.
    _, line = render_line([_item("g", 0, ItemState.FAILED,
                                 error="unsupported_endpoint: this endpoint is not available")], MODEL,
                          expired=False) or ("", "")
    out = json.loads(line)
    assert out["response"]["status_code"] == 400
    assert out["response"]["body"]["error"]["code"] == "unsupported_endpoint"
    _, line = render_line([_item("p", 0, ItemState.FAILED, error="generation failed: PoisonedPrompt")], MODEL,
                          expired=False) or ("", "")
    err = json.loads(line)["response"]
    assert err["status_code"] == 500 and err["body"]["error"]["code"] == "generation_failed"


def test_personalization_output_lists_every_text() -> None:
    items = [_item("p", i, ItemState.SUCCEEDED, url="/v1/personalize", text=f"T{i}", n=i) for i in range(2)]
    _, line = render_line(items, MODEL, expired=False) or ("", "")
    body = json.loads(line)["response"]["body"]
    assert body["object"] == "personalization"
    assert [(r["key"], r["variant"], r["text"]) for r in body["results"]] == [("r1", 0, "T0"), ("r1", 1, "T1")]
    assert body["usage"]["total_tokens"] == 16


def _augment_items() -> list[Item]:
    specs = _expand(_line("/v1/augment", {**AUGMENT_BODY, "methods": [{"method": "eda", "k": 1},
                                                                      {"method": "paraphrase"}]}), custom_id="a1")
    return [Item(id=f"itm_{n:028x}", key=s.key, variant=s.variant, state=ItemState.SUCCEEDED, text=f"out {n}",
                 record=s.record, provenance={"prompt_tokens": 4 if n < 4 else 0, "completion_tokens": 2},
                 finished_at=datetime(2026, 11, 23, 0, 0, n, tzinfo=UTC)) for n, s in enumerate(specs)]


def test_augment_line_renders_only_with_its_verdicts() -> None:
    from factory.db.models import AugmentationVerdict

    items = _augment_items()
    assert render_line(items, MODEL, expired=False) is None  # succeeded, but not judged yet
    reasons = {0: "prompt_leftover", 1: "prompt_leftover", 6: "near_duplicate"}
    verdicts = {i.id: AugmentationVerdict(item_id=i.id, accepted=n not in reasons, reason=reasons.get(n))
                for n, i in enumerate(items)}
    assert render_line(items, MODEL, expired=False, verdicts={k: v for k, v in verdicts.items()
                                                               if k != items[-1].id}) is None
    tally = Tally()
    kind, line = render_line(items, MODEL, expired=False, tally=tally, verdicts=verdicts) or ("", "")
    out = json.loads(line)
    assert kind == OUTPUT and out["custom_id"] == "a1" and out["response"]["status_code"] == 200
    body = out["response"]["body"]
    assert list(body) == ["id", "object", "created", "model", "data", "rejected", "report", "usage"]
    assert (body["id"], body["object"], body["model"]) == (f"aug-{0:028x}", "augmentation.result", MODEL)
    assert body["created"] == int(datetime(2026, 11, 23, 0, 0, 7, tzinfo=UTC).timestamp())
    # include_source (the default): the source rows first, then the accepted outputs.
    assert [(r["method"], r["source_row_id"], r["label"], r["variant"]) for r in body["data"]] == [
        ("original", "r0", "track", None), ("original", "r1", "cancel", None), ("original", "r2", "track", None),
        ("original", "r3", "cancel", None), ("paraphrase", "r2", "track", 0), ("paraphrase", "r3", "cancel", 0),
        ("eda", "r0", "track", 0), ("eda", "r1", "cancel", 0), ("eda", "r3", "cancel", 0)]
    assert body["data"][4]["text"] == "out 2" and body["data"][0]["text"] == "where is my parcel"
    assert body["rejected"] == [
        {"text": "out 0", "label": "track", "method": "paraphrase", "source_row_id": "r0", "variant": 0,
         "reason": "prompt_leftover"},
        {"text": "out 1", "label": "cancel", "method": "paraphrase", "source_row_id": "r1", "variant": 0,
         "reason": "prompt_leftover"},
        {"text": "out 6", "label": "track", "method": "eda", "source_row_id": "r2", "variant": 0,
         "reason": "near_duplicate"}]
    assert body["report"] == {"generated": 8, "accepted": 5, "rejected_by": {"prompt_leftover": 2,
                                                                             "near_duplicate": 1},
                              "acceptance_rate": 0.625}
    assert body["usage"] == {"prompt_tokens": 16, "completion_tokens": 16, "total_tokens": 32}
    assert (tally.completed, tally.input_tokens, tally.output_tokens) == (1, 16, 16)
    # Rendering is a pure function of the rows.
    assert render_line(items, MODEL, expired=False, verdicts=verdicts) == (kind, line)


def test_augment_line_without_sources_in_its_response_and_failed_lines() -> None:
    from factory.db.models import AugmentationVerdict

    items = _augment_items()
    items[0].record["augment_line"]["include_source"] = False
    verdicts = {i.id: AugmentationVerdict(item_id=i.id, accepted=True, reason=None) for i in items}
    _, line = render_line(items, MODEL, expired=False, verdicts=verdicts) or ("", "")
    assert [r["method"] for r in json.loads(line)["response"]["body"]["data"]] == ["paraphrase"] * 4 + ["eda"] * 4
    items[3].state, items[3].error, items[3].text = ItemState.FAILED, "generation failed: PoisonedPrompt", None
    kind, line = render_line(items, MODEL, expired=False) or ("", "")
    err = json.loads(line)["response"]
    assert kind == ERROR and err["status_code"] == 500 and err["body"]["error"]["code"] == "generation_failed"
    items[3].state = ItemState.CANCELLED
    _, line = render_line(items, MODEL, expired=True) or ("", "")
    assert json.loads(line)["error"]["code"] == "batch_expired"


def test_group_lines_splits_on_key_changes() -> None:
    items = [_item("a", 0, ItemState.SUCCEEDED), _item("a", 1, ItemState.SUCCEEDED), _item("b", 0, ItemState.FAILED)]
    assert [[i.key for i in g] for g in group_lines(items)] == [["a", "a"], ["b"]]
