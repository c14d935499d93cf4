"""The strict JSON decoder: what it refuses (with the JSON path), what it keeps as json.loads would."""

from __future__ import annotations

import json

import pytest
from fastapi import APIRouter

from factory.api import routing
from factory.api.app import create_app
from factory.batches.lines import LineError, parse_line
from factory.config import Settings
from factory.strict_json import MAX_INT, InvalidJSON, JSONLimits, decode


@pytest.mark.parametrize("text", [
    '{"a": [1, -2.5, 1e308, true, null, "\\u00e9\\ud83d\\ude00 \\n"], "b": {"c": ""}}',
    f'[{MAX_INT}, -{MAX_INT}, 0.1234567890123456789, 1E-400]',
    '"plain"', "[]", "{}",
    "[" * 32 + "]" * 32,
])
def test_valid_json_decodes_as_json_loads_does(text: str) -> None:
    assert decode(text.encode()) == json.loads(text)


@pytest.mark.parametrize(("text", "path", "reason"), [
    ('{"a": 1, "b": {"c": 1, "c": 2}}', "b.c", "more than once"),
    ('{"a": [0, {"b": "x\\ud800"}]}', "a[1].b", "surrogates"),
    ('{"a": "\\udfff"}', "a", "surrogates"),
    ('{"a": "x\\u0000"}', "a", "NUL"),
    ('{"a": {"k\\u0000": 1}}', "a", "keys"),
    ('{"a": NaN}', "a", "not a JSON number"),
    ('{"a": [-Infinity]}', "a[0]", "not a JSON number"),
    ('{"a": 1e400}', "a", "finite"),
    ('{"a": -1e400}', "a", "finite"),
    (f'{{"a": {MAX_INT + 1}}}', "a", "integers"),
    ('{"a": ' + "9" * 5000 + "}", "a", "integers"),
    ('{"a": ' + "[" * 40 + "]" * 40 + "}", "a" + "[0]" * 31, "nested deeper"),
    ("[" * 50_000 + "]" * 50_000, "", "nested deeper"),
    ('{"a": 1', "", "not valid JSON"),
    ('{"a": 1}\n{"b": 2}', "", "not valid JSON"),
    ('{"this key is far too long to be shown back in an error field, whatever it holds": {"x": 1, "x": 1}}',
     "<key>.x", "more than once"),
])
def test_hostile_json_is_refused_naming_the_path(text: str, path: str, reason: str) -> None:
    with pytest.raises(InvalidJSON) as info:
        decode(text.encode())
    assert (info.value.path, info.value.field) == (path, path or "body")
    assert reason in info.value.reason


def test_bytes_must_be_utf8_and_depth_is_a_setting() -> None:
    for raw in (b'{"a": "\xff"}', b'{"a": "\xed\xa0\x80"}', '{"a": "é"}'.encode("utf-16")):
        with pytest.raises(InvalidJSON, match="UTF-8"):
            decode(raw)
    assert decode("[[[]]]", JSONLimits(max_depth=3)) == [[[]]]
    with pytest.raises(InvalidJSON):
        decode("[[[[]]]]", JSONLimits(max_depth=3))


def test_an_app_with_a_route_built_without_api_router_does_not_start() -> None:
    app = create_app(Settings(), run_migrations=False)
    loose = APIRouter(prefix="/v1/loose")

    @loose.post("")
    def take(body: dict[str, str]) -> None: ...

    app.include_router(loose)
    with pytest.raises(RuntimeError, match="/v1/loose"):
        routing.check_routes(app)


_CHAT_HEAD = b'{"custom_id": "a", "method": "POST", "url": "/v1/chat/completions", '


@pytest.mark.parametrize(("raw", "code", "param"), [
    (_CHAT_HEAD + b'"url": "/v1/chat/completions", "body": {}}', "invalid_request", "url"),
    (_CHAT_HEAD + b'"body": {"model": "m", "messages": [{"role": "user", "content": "\\ud800"}]}}',
     "invalid_request", "body.messages[0].content"),
    (_CHAT_HEAD + b'"body": {"model": "m", "messages": [{"role": "user", "content": "a\\u0000"}]}}',
     "invalid_request", "body.messages[0].content"),
    (_CHAT_HEAD + b'"body": {"model": "m", "temperature": NaN, "messages": []}}', "invalid_request",
     "body.temperature"),
    (_CHAT_HEAD + b'"body": {"model": "m", "seed": 1' + b"0" * 5000 + b', "messages": []}}', "invalid_request",
     "body.seed"),
    (_CHAT_HEAD + b'"body": {"model": "m", "metadata": {"k": "v", "k": "w"}, "messages": []}}', "invalid_request",
     "body.metadata.k"),
    (_CHAT_HEAD + b'"body": {"model": "m", "messages": []}, "\\u0000": 1}', "invalid_json_line", None),
    (_CHAT_HEAD + b'"body": ' + b"[" * 40 + b"]" * 40 + b"}", "invalid_request", "body" + "[0]" * 31),
    (b"[" * 100_000 + b"]" * 100_000, "invalid_json_line", None),
    (b'{"custom_id": "\xff\xfe"}', "invalid_json_line", None),
])
def test_strict_decoding_refuses_the_line_naming_the_json_path(raw: bytes, code: str, param: str | None) -> None:
    """Duplicate keys, lone surrogates, NUL, NaN, huge numbers, deep nesting, bytes that are not UTF-8."""
    with pytest.raises(LineError) as info:
        parse_line(raw)
    assert (info.value.code, info.value.param) == (code, param)
    assert "ud800" not in info.value.message and "000000" not in info.value.message
