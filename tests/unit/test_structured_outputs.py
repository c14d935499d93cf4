"""Structured outputs at submit: which schemas the worker's grammar can enforce, the 422s naming the path
of what it cannot, and what a chat request or batch line carries to the worker."""

from __future__ import annotations

import json
from typing import Any, Literal

import pytest
from openai.lib._parsing._completions import type_to_response_format_param
from pydantic import BaseModel, Field, TypeAdapter, ValidationError

from factory.batches.lines import LineContext, LineError, expand, parse_line
from factory.chat import schemas as chat_schemas
from factory.chat.schemas import ChatCompletionRequest
from factory.config import Settings
from factory.errors import InvalidInput
from factory.provenance.hashing import sha256_text
from factory.structured.checks import output_format

MODEL = "smollm2-135m-instruct"
SCHEMA_FIELD = "response_format.json_schema.schema"


class Address(BaseModel):
    city: str
    zip: int


class Ticket(BaseModel):
    sentiment: Literal["positive", "negative", "neutral"]
    reason: str = Field(max_length=80)
    tags: list[str] = Field(max_length=3)
    address: Address
    note: str | None


def json_schema(schema: dict[str, Any], **spec: Any) -> dict[str, Any]:
    return {"type": "json_schema", "json_schema": {"name": "record", "schema": schema, **spec}}


def check(response_format: dict[str, Any], **settings: Any) -> dict[str, Any] | None:
    return output_format(response_format, Settings(**settings))  # type: ignore[arg-type]


def refused(response_format: dict[str, Any], **settings: Any) -> InvalidInput:
    with pytest.raises(InvalidInput) as info:
        check(response_format, **settings)
    return info.value


def test_what_the_openai_sdk_sends_for_a_pydantic_model_is_accepted_and_hashed() -> None:
    sent = dict(type_to_response_format_param(Ticket))
    spec = check(sent)
    schema = sent["json_schema"]["schema"]
    assert spec == {"type": "json_schema", "name": "Ticket", "strict": True, "schema": schema,
                    "schema_sha256": sha256_text(json.dumps(schema, separators=(",", ":")))}
    # Key order is part of the schema (the model writes properties in that order): two orders, two hashes.
    flipped = {**schema, "properties": dict(reversed(list(schema["properties"].items())))}
    other = check(json_schema(flipped))
    assert other is not None and other["schema_sha256"] != spec["schema_sha256"]


def test_text_json_object_and_no_format() -> None:
    assert check({"type": "text"}) is None
    assert output_format(None, Settings()) is None
    assert check({"type": "json_object"}) == {"type": "json_object"}


@pytest.mark.parametrize(("schema", "field", "reason"), [
    ({"type": "object", "properties": {"a": {"type": "string", "not": {"const": "x"}}}},
     f"{SCHEMA_FIELD}.properties.a.not", "keyword not supported"),
    ({"type": "array", "items": {"type": "integer"}, "uniqueItems": True}, f"{SCHEMA_FIELD}.uniqueItems",
     "keyword not supported"),
    ({"oneOf": [{"type": "string"}, {"type": "integer"}]}, f"{SCHEMA_FIELD}.oneOf", "keyword not supported"),
    ({"$defs": {"A": {"type": "object", "if": {}}}, "$ref": "#/$defs/A"}, f"{SCHEMA_FIELD}.$defs.A.if",
     "keyword not supported"),
    ({"type": "object", "properties": {"a": {"$ref": "#/$defs/Missing"}}}, f"{SCHEMA_FIELD}.properties.a.$ref",
     "points to no definition"),
    ({"$ref": "https://example.com/schema.json"}, f"{SCHEMA_FIELD}.$ref", "only local references"),
    ({"type": "string", "format": "credit-card"}, f"{SCHEMA_FIELD}.format", "format not supported"),
    ({"type": "string", "pattern": "(["}, f"{SCHEMA_FIELD}.pattern", "not a valid regular expression"),
    ({"type": "string", "minLength": 10, "maxLength": 5}, f"{SCHEMA_FIELD}.minLength", "greater than maxLength"),
    ({"type": "string", "maxLength": -1}, f"{SCHEMA_FIELD}.maxLength", "non-negative integer"),
    ({"type": "text"}, f"{SCHEMA_FIELD}.type", "must be one of"),
    ({"type": "object", "properties": {"a": {"type": "string"}}, "required": ["a", "b"]},
     f"{SCHEMA_FIELD}.required", "names a property that properties does not declare"),
    ({"type": "object", "properties": {"a": "string"}}, f"{SCHEMA_FIELD}.properties.a", "must be a JSON object"),
    ({"anyOf": []}, f"{SCHEMA_FIELD}.anyOf", "non-empty array of schemas"),
])
def test_what_the_grammar_cannot_enforce_is_422_naming_its_path(schema: dict[str, Any], field: str,
                                                                reason: str) -> None:
    err = refused(json_schema(schema))
    assert err.status_code == 422 and err.field == field
    assert err.message.startswith(f"{field}: ") and reason in err.message


def test_a_property_name_the_client_chose_is_not_echoed_in_the_path() -> None:
    err = refused(json_schema({"type": "object", "properties": {"CANARY secret name!": {"not": {}}}}))
    assert err.field == f"{SCHEMA_FIELD}.properties.<key>.not" and "CANARY" not in err.message


def test_too_deep_and_too_large_schemas_are_refused_with_the_setting_in_the_message() -> None:
    deep: dict[str, Any] = {"type": "string"}
    for _ in range(4):
        deep = {"type": "object", "properties": {"x": deep}}
    assert check(json_schema(deep), structured_schema_max_depth=4) is not None
    err = refused(json_schema({"type": "object", "properties": {"y": deep}}), structured_schema_max_depth=4)
    assert err.field == f"{SCHEMA_FIELD}.properties.y.properties.x.properties.x.properties.x.properties.x"
    assert "deeper than 4 levels" in err.message
    wide = {"type": "object", "properties": {f"p{i}": {"type": "string"} for i in range(40)}}
    err = refused(json_schema(wide), structured_schema_max_bytes=512)
    assert err.field == SCHEMA_FIELD and "larger than 512 bytes" in err.message


def test_a_json_schema_without_a_schema_is_refused_by_name() -> None:
    err = refused({"type": "json_schema", "json_schema": {"name": "x"}})
    assert err.field == SCHEMA_FIELD and "json_object" in err.message


@pytest.mark.parametrize("response_format", [
    {"type": "json_schema", "json_schema": {"name": "has space", "schema": {}}},
    {"type": "json_schema", "json_schema": {"name": "x", "schema": {}, "extra": 1}},
    {"type": "json_schema"},
    {"type": "json_schema", "json_schema": {"name": "x"}},
    {"type": "json_schema", "json_schema": {"name": "x", "schema": None}},
    {"type": "grammar", "grammar": "root ::= x"},
    {"type": "json_object", "schema": {}},
])
def test_malformed_response_formats_fail_body_validation(response_format: dict[str, Any]) -> None:
    body = {"model": MODEL, "messages": [{"role": "user", "content": "x"}], "response_format": response_format}
    with pytest.raises(ValidationError) as info:
        TypeAdapter(ChatCompletionRequest).validate_python(body)
    assert all(e["loc"][0] == "response_format" for e in info.value.errors())


def test_stop_strings_cannot_be_combined_with_a_response_format() -> None:
    body: Any = {"model": MODEL, "messages": [{"role": "user", "content": "x"}], "stop": ["}"],
                 "response_format": {"type": "json_object"}}
    with pytest.raises(InvalidInput) as info:
        chat_schemas.output_format(TypeAdapter(ChatCompletionRequest).validate_python(body), Settings())
    assert info.value.field == "stop"


def _line(custom_id: str, **body: Any) -> bytes:
    return json.dumps({"custom_id": custom_id, "method": "POST", "url": "/v1/chat/completions",
                       "body": {"model": MODEL, "messages": [{"role": "user", "content": "Hi"}], **body}}).encode()


def test_a_batch_line_carries_its_response_format_to_the_worker() -> None:
    ctx = LineContext(settings=Settings(), batch_seed=7)
    sent = dict(type_to_response_format_param(Ticket))
    (spec,) = expand(ctx, 1, parse_line(_line("a", response_format=sent, seed=1)))
    (plain,) = expand(ctx, 2, parse_line(_line("b", seed=1)))
    assert spec.request_json is not None and plain.request_json is not None
    request = json.loads(spec.request_json)
    assert request == {**json.loads(plain.request_json), "response_format": check(sent)}
    # The synchronous endpoint writes the same request for the same body.
    body: Any = TypeAdapter(ChatCompletionRequest).validate_python(parse_line(_line("a", response_format=sent))["body"])
    assert chat_schemas.output_format(body, Settings()) == request["response_format"]
    assert "response_format" not in json.loads(plain.request_json)


def test_a_batch_line_with_a_bad_schema_names_the_body_path() -> None:
    ctx = LineContext(settings=Settings(), batch_seed=7)
    bad = json_schema({"type": "object", "properties": {"a": {"type": "string", "multipleOf": 2}}})
    for _ in range(2):  # the second sees the same format again: still refused (failures are not cached)
        with pytest.raises(LineError) as info:
            expand(ctx, 1, parse_line(_line("a", response_format=bad)))
        assert info.value.code == "invalid_request"
        assert info.value.param == f"body.{SCHEMA_FIELD}.properties.a.multipleOf"
    with pytest.raises(LineError) as info:
        expand(ctx, 1, parse_line(_line("a", response_format={"type": "json_object"}, stop="}")))
    assert info.value.param == "body.stop"
