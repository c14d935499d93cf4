"""Batch lines: parsing, validation codes, expansion into items, and the output/error line shapes."""

from __future__ import annotations

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
    assert specs[0].request == {"messages": [{"role": "system", "content": "Be brief."},
                                             {"role": "user", "content": "Hi"}],
                                "params": {"max_new_tokens": 12, "temperature": 0.5, "top_p": 1.0,
                                           "repetition_penalty": 1.1},
                                "stop": ["END"]}
    assert specs[0].record_json is not None and specs[0].prompt == "Hi"
    assert json.loads(specs[0].record_json) == {"line": 4, "url": "/v1/chat/completions"}
    assert specs[0].key == "c1"


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


def test_augment_line_is_accepted_but_born_failed() -> None:
    [spec] = _expand(_line("/v1/augment", {"model": MODEL, "records": []}))
    assert spec.error is not None and spec.error.startswith("unsupported_endpoint: ")


def _item(key: str, variant: int, state: ItemState, *, url: str = "/v1/chat/completions", text: str = "t",
          error: str | None = None, n: int = 0) -> Item:
    return Item(id=f"itm_{n:028x}", key=key, variant=variant, state=state, text=text, error=error,
                record={"line": 1, "url": url, "recipient": "r1", "variant": variant},
                provenance={"prompt_tokens": 5, "completion_tokens": 3, "finish_reason": "length",
                            "weights_sha256": "ab" * 32},
                finished_at=datetime(2026, 11, 23, tzinfo=UTC))


def test_output_line_is_the_openai_shape_with_n_choices() -> None:
    tally = Tally()
    kind, line = render_line([_item("c1", 0, ItemState.SUCCEEDED, text="A", n=1),
                              _item("c1", 1, ItemState.SUCCEEDED, text="B", n=2)], MODEL, expired=False, tally=tally)
    out = json.loads(line)
    assert kind == OUTPUT and list(out) == ["id", "custom_id", "response", "error"]
    assert out["id"] == f"batch_req_{1:028x}" and out["custom_id"] == "c1" and out["error"] is None
    body = out["response"]["body"]
    assert out["response"]["status_code"] == 200 and out["response"]["request_id"] == f"req_{1:028x}"
    assert body["object"] == "chat.completion" and body["model"] == MODEL
    assert [(c["index"], c["message"]["content"], c["finish_reason"]) for c in body["choices"]] == [
        (0, "A", "length"), (1, "B", "length")]
    assert body["usage"] == {"prompt_tokens": 5, "completion_tokens": 6, "total_tokens": 11}
    assert (tally.completed, tally.input_tokens, tally.output_tokens) == (1, 5, 6)


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
    _, line = render_line([_item("g", 0, ItemState.FAILED, url="/v1/augment",
                                 error="unsupported_endpoint: /v1/augment is not available")], MODEL,
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


def test_group_lines_splits_on_key_changes() -> None:
    items = [_item("a", 0, ItemState.SUCCEEDED), _item("a", 1, ItemState.SUCCEEDED), _item("b", 0, ItemState.FAILED)]
    assert [[i.key for i in g] for g in group_lines(items)] == [["a", "a"], ["b"]]
