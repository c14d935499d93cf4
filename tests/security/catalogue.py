"""The hostile catalogue: for every endpoint that takes a body, requests an attacker would send.

Each ``Case`` is a raw request (bytes and headers, so nothing is cleaned up by a JSON
library on the way) with the exact status it must get, the field the error must name,
and the text the response must not contain (``CANARY`` is planted in every hostile string).

JSON endpoints get every class of ``JSON_CLASSES`` (planted at the endpoint's ``slot``, a
string field of an otherwise valid body) plus the media-type and size classes; ``/v1/files``
(multipart) has its own list; a few endpoint-specific cases (limits of one schema) follow.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from factory.config import Settings

CANARY = "CANARY-5e1d-DO-NOT-ECHO"
SLOT = "__HOSTILE_SLOT__"
JSON = {"content-type": "application/json"}
MODEL = "smollm2-135m-instruct"
# Small limits, so over-limit bodies are cheap to send; the chat limit keeps its default.
TEST_LIMITS: dict[str, Any] = {"max_body_bytes": 512 * 1024, "resource_max_body_bytes": 64 * 1024,
                               "batch_max_file_bytes": 64 * 1024}


@dataclass(frozen=True)
class Endpoint:
    method: str
    route: str  # the route's path, as the app lists it
    url: str
    body: dict[str, Any]  # valid but for SLOT, a string placed at the field ``slot``
    slot: str
    limit: Callable[[Settings], int]


@dataclass(frozen=True)
class Case:
    name: str
    method: str
    route: str
    url: str
    status: int
    field: str  # the error's field must start with this
    content: bytes | tuple[bytes, ...] | None = None  # a tuple is sent in chunks, without Content-Length
    headers: dict[str, str] = field(default_factory=dict)
    files: Any = None
    data: dict[str, str] | None = None
    forbidden: tuple[str, ...] = (CANARY,)  # never in the response body
    message_has: str = ""


ENDPOINTS = [
    Endpoint("POST", "/v1/jobs", "/v1/jobs", {
        "kind": "personalization", "template": "Hi {{ first_name }}",
        "audience": [{"id": "r0", "first_name": SLOT}]}, "audience[0].first_name", lambda s: s.max_body_bytes),
    Endpoint("POST", "/v1/jobs/{job_id}/cancel", "/v1/jobs/job_00000000000000000000000000ff/cancel",
             {"note": SLOT}, "note", lambda s: s.resource_max_body_bytes),
    Endpoint("POST", "/v1/chat/completions", "/v1/chat/completions", {
        "model": MODEL, "messages": [{"role": "user", "content": SLOT}]}, "messages[0].content",
        lambda s: s.chat_max_body_bytes),
    Endpoint("POST", "/v1/batches", "/v1/batches", {
        "input_file_id": "file-0000", "endpoint": "/v1/chat/completions", "completion_window": "24h",
        "metadata": {"note": SLOT}}, "metadata.note", lambda s: s.resource_max_body_bytes),
    Endpoint("POST", "/v1/batches/{batch_id}/cancel", "/v1/batches/batch_0000/cancel", {"note": SLOT}, "note",
             lambda s: s.resource_max_body_bytes),
    Endpoint("POST", "/v1/templates", "/v1/templates", {
        "name": "greeting", "source": "Hi {{ first_name }}", "variables": {"first_name": "string"},
        "description": SLOT}, "description", lambda s: s.resource_max_body_bytes),
    Endpoint("PUT", "/v1/templates/{name}", "/v1/templates/greeting", {
        "source": "Hi {{ first_name }}", "variables": {"first_name": "string"}, "description": SLOT},
        "description", lambda s: s.resource_max_body_bytes),
    Endpoint("POST", "/v1/brands", "/v1/brands", {"name": "acme", "display_name": "Acme", "voice": SLOT}, "voice",
             lambda s: s.resource_max_body_bytes),
    Endpoint("PUT", "/v1/brands/{name}", "/v1/brands/acme", {"display_name": "Acme", "voice": SLOT}, "voice",
             lambda s: s.resource_max_body_bytes),
    Endpoint("POST", "/v1/campaigns", "/v1/campaigns", {
        "name": SLOT, "brand": "acme", "audience": {"format": "records", "records": [{"id": "r0"}]},
        "messages": [{"channel": "email", "template": "greeting"}]}, "name", lambda s: s.max_body_bytes),
    Endpoint("POST", "/v1/admin/keys", "/v1/admin/keys", {"name": SLOT, "scopes": ["read"]}, "name",
             lambda s: s.resource_max_body_bytes),
    Endpoint("POST", "/v1/admin/keys/{key_id}/revoke", "/v1/admin/keys/key_0000/revoke", {"note": SLOT}, "note",
             lambda s: s.resource_max_body_bytes),
    Endpoint("POST", "/v1/pipelines", "/v1/pipelines", {
        "name": "inbox", "schedule": {"every_seconds": 3600},
        "job": {"kind": "batch", "request": {"endpoint": "/v1/chat/completions", "metadata": {"note": SLOT}}},
        "input": {"source": "newest", "prefix": "inbox-"}}, "job.request.metadata.note",
             lambda s: s.max_body_bytes),
    Endpoint("PATCH", "/v1/pipelines/{pipeline_id}", "/v1/pipelines/pipe_0000", {"webhook_url": SLOT},
             "webhook_url", lambda s: s.max_body_bytes),
    *(Endpoint("POST", f"/v1/pipelines/{{pipeline_id}}/{action}", f"/v1/pipelines/pipe_0000/{action}",
               {"note": SLOT}, "note", lambda s: s.resource_max_body_bytes) for action in ("pause", "resume", "run")),
    Endpoint("POST", "/v1/items/{item_id}/verify", "/v1/items/itm_00000000000000000000000000ff/verify",
             {"note": SLOT}, "note", lambda s: s.resource_max_body_bytes),
    Endpoint("POST", "/v1/jobs/{job_id}/verify", "/v1/jobs/job_00000000000000000000000000ff/verify",
             {"sample": 2, "note": SLOT}, "note", lambda s: s.resource_max_body_bytes),
]
FILES_ROUTE = ("POST", "/v1/files")

# (name, JSON text replacing the slot's string, status, where the field is: "slot" or "body", forbidden texts)
JSON_CLASSES: list[tuple[str, str, int, str, tuple[str, ...]]] = [
    ("lone high surrogate", f'"{CANARY}\\ud800"', 422, "slot", (CANARY, "ud800")),
    ("lone low surrogate", f'"\\udc00{CANARY}"', 422, "slot", (CANARY, "udc00")),
    ("NUL in string", f'"{CANARY}\\u0000x"', 422, "slot", (CANARY, "u0000")),
    ("NaN", "NaN", 422, "slot", ("NaN",)),
    ("Infinity", "Infinity", 422, "slot", ("Infinity",)),
    ("-Infinity", "-Infinity", 422, "slot", ("Infinity",)),
    ("float beyond double", "1e400", 422, "slot", ("1e400", "inf")),
    ("5000-digit integer", "1" + "0" * 5000, 422, "slot", ("0000000000",)),
    ("integer beyond 64 bits", str(2**64), 422, "slot", (str(2**64),)),
    ("nesting 64 deep", "[" * 64 + "]" * 64, 422, "slot", ("[[[[",)),
    ("nesting 20,000 deep", "[" * 20_000 + "]" * 20_000, 422, "body", ("[[[[",)),
]


def _text(endpoint: Endpoint, slot_json: str) -> str:
    return json.dumps(endpoint.body).replace(json.dumps(SLOT), slot_json)


def _slot_field(endpoint: Endpoint, where: str) -> str:
    return endpoint.slot if where == "slot" else "body"


def json_cases(endpoint: Endpoint, settings: Settings) -> list[Case]:
    e, ok = endpoint, _text(endpoint, json.dumps(CANARY))
    first_key = next(iter(e.body))
    limit = e.limit(settings)

    def case(name: str, content: bytes | tuple[bytes, ...], status: int, fld: str,
             headers: dict[str, str] | None = None, forbidden: tuple[str, ...] = (CANARY,)) -> Case:
        return Case(name, e.method, e.route, e.url, status, fld, content, JSON if headers is None else headers,
                    forbidden=forbidden)

    cases = [case(name, _text(e, text).encode(), status, _slot_field(e, where), forbidden=forbidden)
             for name, text, status, where, forbidden in JSON_CLASSES]
    over = _text(e, json.dumps("x" * limit)).encode()
    cases += [
        case("duplicate key", ("{" + json.dumps(first_key) + ": " + json.dumps(e.body[first_key]) + ", "
                               + ok[1:]).encode(), 422, first_key),
        case("NUL in a key", ('{"' + CANARY + '\\u0000": 1, ' + ok[1:]).encode(), 422, "body"),
        case("surrogate in a key", ('{"\\ud800' + CANARY + '": 1, ' + ok[1:]).encode(), 422, "body"),
        case("unknown field", ('{"zz_unknown_field": "' + CANARY + '", ' + ok[1:]).encode(), 422,
             "zz_unknown_field"),
        case("malformed JSON", ok[:-3].encode(), 422, "body"),
        case("not UTF-8", ok.encode().replace(CANARY.encode(), b"\xff\xfe" + CANARY.encode()), 422, "body"),
        case("UTF-8 encoded surrogate", ok.encode().replace(CANARY.encode(), b"\xed\xa0\x80" + CANARY.encode()),
             422, "body"),
        case("text/plain", ok.encode(), 415, "Content-Type", {"content-type": "text/plain"}),
        case("no content type", ok.encode(), 415, "Content-Type", {}),
        case("form content type", ok.encode(), 415, "Content-Type",
             {"content-type": "application/x-www-form-urlencoded"}),
        case("multipart content type", ok.encode(), 415, "Content-Type",
             {"content-type": "multipart/form-data; boundary=x"}),
        case("latin-1 charset", ok.encode(), 415, "Content-Type",
             {"content-type": "application/json; charset=latin-1"}),
        case("over the body limit", over, 413, "body"),
        case("over the body limit, chunked", (over[:1000], over[1000:]), 413, "body"),
    ]
    return cases


def _multipart(parts: list[tuple[str, str | None, bytes]],
               boundary: str = "hostileboundary") -> tuple[bytes, dict[str, str]]:
    out = b""
    for name, filename, payload in parts:
        disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
        out += f"--{boundary}\r\nContent-Disposition: {disposition}\r\n\r\n".encode() + payload + b"\r\n"
    return out + f"--{boundary}--\r\n".encode(), {"content-type": f"multipart/form-data; boundary={boundary}"}


def file_cases(settings: Settings) -> list[Case]:
    method, route = FILES_ROUTE
    good_line = json.dumps({"custom_id": CANARY, "method": "POST", "url": "/v1/chat/completions",
                            "body": {"model": MODEL, "messages": [{"role": "user", "content": "hi"}]}}).encode()

    def upload(name: str, status: int, fld: str, payload: bytes, purpose: str = "batch",
               message_has: str = "") -> Case:
        content, headers = _multipart([("purpose", None, purpose.encode()), ("file", "in.jsonl", payload)])
        return Case(name, method, route, route, status, fld, content, headers, message_has=message_has)

    two_files, two_headers = _multipart([("purpose", None, b"batch"), ("file", "a.jsonl", good_line),
                                         ("file", "b.jsonl", good_line)])
    no_file, no_file_headers = _multipart([("purpose", None, b"batch")])
    broken, _ = _multipart([("purpose", None, b"batch"), ("file", "a.jsonl", good_line)])
    too_big = good_line + b"\n" + b"x" * (settings.batch_max_file_bytes + (1 << 20))
    return [
        upload("non-UTF-8 batch line", 422, "file", good_line + b"\n" + good_line.replace(b"hi", b"h\xffi"),
               message_has="line 2"),
        upload("UTF-8 encoded surrogate in a batch line", 422, "file",
               good_line.replace(b"hi", b"h\xed\xa0\x80i") + b"\n", message_has="line 1"),
        upload("Latin-1 batch file", 422, "file", "caf\u00e9".encode("latin-1") + b"\n", message_has="line 1"),
        upload("empty file", 422, "file", b""),
        upload("NUL in purpose", 422, "purpose", good_line, purpose=f"batch\x00{CANARY}"[:30]),
        upload("unknown purpose", 422, "purpose", good_line, purpose=CANARY[:30]),
        Case("two files", method, route, route, 422, "body", two_files, two_headers),
        Case("no file", method, route, route, 422, "file", no_file, no_file_headers),
        Case("broken multipart (boundary mismatch)", method, route, route, 422, "body", broken,
             {"content-type": "multipart/form-data; boundary=otherboundary"}),
        Case("truncated multipart (no file part left)", method, route, route, 422, "file",
             broken[: broken.index(b'name="file"')],
             {"content-type": "multipart/form-data; boundary=hostileboundary"}),
        Case("JSON instead of multipart", method, route, route, 415, "Content-Type", b'{"purpose": "batch"}', JSON),
        Case("no content type", method, route, route, 415, "Content-Type", broken, {}),
        Case("over the upload limit", method, route, route, 413, "body", *_multipart([
            ("purpose", None, b"batch"), ("file", "big.jsonl", too_big)])),
    ]


def schema_cases() -> list[Case]:
    """Limits one schema sets: over-long texts and lists, metadata rules."""
    chat = ENDPOINTS[2]
    batch = ENDPOINTS[3]

    def body(endpoint: Endpoint, name: str, status: int, fld: str, **changes: Any) -> Case:
        payload = {k: v for k, v in endpoint.body.items()} | changes
        return Case(name, endpoint.method, endpoint.route, endpoint.url, status, fld,
                    json.dumps(payload).replace(json.dumps(SLOT), json.dumps(CANARY)).encode(), JSON)

    long_text = CANARY * (70_000 // len(CANARY))
    return [
        body(chat, "chat message over 65,536 characters", 422, "messages[0].content",
             messages=[{"role": "user", "content": long_text}]),
        body(chat, "chat with 257 messages", 422, "messages", messages=[{"role": "user", "content": "hi"}] * 257),
        body(chat, "chat with 5 stop strings", 422, "stop", stop=["a", "b", "c", "d", "e"]),
        body(chat, "chat metadata with NUL", 422, "metadata.k", metadata={"k": f"v\x00{CANARY}"}),
        body(batch, "batch metadata with a control character", 422, "metadata.note",
             metadata={"note": f"\x1b[31m{CANARY}"}),
        body(batch, "batch metadata key with a control character", 422, "metadata",
             metadata={f"k\x07{CANARY}"[:60]: "v"}),
        body(batch, "batch metadata with 17 pairs", 422, "metadata", metadata={f"k{i}": "v" for i in range(17)}),
        body(batch, "batch metadata value over 512 characters", 422, "metadata.note",
             metadata={"note": long_text[:513]}),
        body(batch, "batch metadata key over 64 characters", 422, "metadata", metadata={long_text[:65]: "v"}),
        body(batch, "batch metadata value not a string", 422, "metadata.note", metadata={"note": 7}),
    ]


# Templates that would make megabytes or minutes of work from a few KB (the report behind this
# catalogue: two 6 KB jobs of 50 recipients grew SQLite to 23 GB): (name, template, field, message).
LOOP = "{% for i in range(600) %}{{ first_name }}-yyyyyyyyyyyyyyyyyyyyyyyyy{% endfor %}"
AMPLIFYING_TEMPLATES = [
    ("string repetition", "{{ first_name * 50000000 }}", "audience[0]", "repeated value"),
    ("static text in a long loop", "{% for i in range(60000) %}xxxxxxxxxxxxxxxxxxxx{% endfor %}", "audience[0]",
     "printed more than"),
    ("nested empty loops", "{% for i in range(60000) %}{% for j in range(60000) %}{% endfor %}{% endfor %}",
     "audience", "steps"),
    ("nested loops whose test is false",
     "{% for i in range(60000) %}{% for j in range(60000) if false %}{% endfor %}{% endfor %}", "audience", "steps"),
    ("doubling concatenation", "{% set ns = namespace(s=first_name) %}{% for i in range(40) %}"
     "{% set ns.s = ns.s ~ ns.s %}{% endfor %}{{ ns.s|length }}", "audience[0]", "concatenated value"),
    ("doubling addition", "{% set ns = namespace(s=first_name) %}{% for i in range(40) %}"
     "{% set ns.s = ns.s + ns.s %}{% endfor %}", "audience[0]", "longer than"),
    ("huge power", "{{ 9 ** (9 ** 9) }}", "audience[0]", "power larger"),
    ("percent-format width", "{{ '%0999999999d' % 1 }}", "audience[0]", "width"),
    ("str.format width", "{{ '{:>999999999}'.format(first_name) }}", "audience[0]", "width"),
    ("center filter", "{{ first_name|center(999999999) }}", "audience[0]", "number larger"),
    ("replace with an empty needle", "{{ (first_name * 2000)|replace('', first_name * 2000) }}", "audience[0]",
     "replaced value"),
    ("join of a long range", "{{ range(60000)|join(first_name * 2000) }}", "audience[0]", "joined value"),
    ("set block filled by a loop", "{% set b %}{% for i in range(60000) %}{{ first_name }}{% endfor %}{% endset %}"
     "{{ b|length }}", "audience[0]", "printed more than"),
    ("exponential macro", "{% macro f(n) %}{% if n %}{{ f(n - 1) }}{{ f(n - 1) }}{% endif %}{% endmacro %}"
     "{{ f(40) }}", "audience", "steps"),
    ("a prompt over 32 KiB", LOOP.replace("600", "700"), "audience[0]", "rendered prompt"),
]


def amplification_cases() -> list[Case]:
    """Each template over 50 recipients whose first name is the canary (about 6 KB a body)."""
    jobs, templates = ENDPOINTS[0], ENDPOINTS[5]
    audience = [{"id": f"r{i}", "first_name": CANARY} for i in range(50)]
    cases = [Case(f"template amplification: {name}", jobs.method, jobs.route, jobs.url, 422, fld,
                  json.dumps({"kind": "personalization", "template": source, "audience": audience}).encode(), JSON,
                  message_has=message)
             for name, source, fld, message in AMPLIFYING_TEMPLATES]
    # Under every per-prompt limit, but 100 prompts of 29 KB from a 7 KB body: the write budget refuses it.
    wide = [{"id": f"r{i}", "first_name": CANARY} for i in range(100)]
    cases.append(Case("template amplification: prompts far larger than the request", jobs.method, jobs.route,
                      jobs.url, 422, "template", json.dumps({"kind": "personalization", "template": LOOP,
                                                             "audience": wide}).encode(), JSON,
                      message_has="times the"))
    cases += [Case(f"registered template amplification: {name}", templates.method, templates.route, templates.url,
                   422, "source", json.dumps({"name": "greeting", "source": source,
                                              "variables": {"first_name": "string"}}).encode(), JSON,
                   message_has=message)
              for name, source, _, message in AMPLIFYING_TEMPLATES[:2]]
    return cases


def catalogue(settings: Settings) -> list[Case]:
    cases = [c for e in ENDPOINTS for c in json_cases(e, settings)]
    return cases + file_cases(settings) + schema_cases() + amplification_cases()


def covered_routes() -> set[tuple[str, str]]:
    return {(e.method, e.route) for e in ENDPOINTS} | {FILES_ROUTE}
