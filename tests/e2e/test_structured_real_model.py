"""Structured outputs with the real model: the openai SDK's ``parse`` against the server, and a batch of 50
lines mixing three JSON schemas (nested objects, enums, arrays, string length limits), any JSON object and
free text, through real API and worker processes.

Every constrained output that succeeds parses and validates against its schema; a row that cannot finish
inside its max_tokens fails with that reason; plain lines are generated as if alone.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Literal

import jsonschema_rs
import openai
import pytest
from openai import OpenAI
from pydantic import BaseModel, Field
from sqlalchemy import select

from factory.db.models import Batch, Item
from factory.db.session import get_sessionmaker
from factory.provenance.hashing import schema_sha256
from tests.conftest import MODEL_CACHE
from tests.keys import api_key
from tests.processes import api_server, stack_env, worker
from tests.services import SeaweedS3

# Two batches of the real model (50 lines, then 7); minutes on a 2-core CPU, more on a shared one.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(2400)]

MODEL = "smollm2-135m-instruct"
TERMINAL = ("completed", "failed", "cancelled", "expired")


class Product(BaseModel):
    name: str = Field(max_length=30)
    urgent: bool


class Ticket(BaseModel):
    sentiment: Literal["positive", "negative", "neutral"]
    score: int = Field(ge=1, le=5)
    tags: list[str] = Field(max_length=3)
    product: Product


EMAIL = {"type": "object", "additionalProperties": False, "required": ["subject", "preheader", "body"],
         "properties": {"subject": {"type": "string", "minLength": 3, "maxLength": 60},
                        "preheader": {"type": "string", "maxLength": 80},
                        "body": {"type": "string", "minLength": 10, "maxLength": 240}}}
TICKET = {"type": "object", "additionalProperties": False, "required": ["sentiment", "score", "tags", "product"],
          "properties": {"sentiment": {"enum": ["positive", "negative", "neutral"]},
                         "score": {"type": "integer", "minimum": 1, "maximum": 5},
                         "tags": {"type": "array", "items": {"type": "string", "maxLength": 16}, "maxItems": 3},
                         "product": {"type": "object", "additionalProperties": False, "required": ["name", "urgent"],
                                     "properties": {"name": {"type": "string", "maxLength": 30},
                                                    "urgent": {"type": "boolean"}}}}}


def fmt(name: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"type": "json_schema", "json_schema": {"name": name, "schema": schema, "strict": True}}


def line(custom_id: str, content: str, **body: Any) -> dict[str, Any]:
    return {"custom_id": custom_id, "method": "POST", "url": "/v1/chat/completions",
            "body": {"model": MODEL, "messages": [{"role": "user", "content": content}], "max_tokens": 200,
                     "temperature": 0.3, **body}}


# A 135M model keeps to the point when the prompt names the fields; the grammar only guarantees the shape.
EMAIL_PROMPT = ("Write a short marketing email about our autumn bike sale (20% off until Sunday). Reply with a JSON "
                "object: subject (a few words), preheader (one short sentence) and body (two short sentences).")
TICKET_PROMPT = ("Classify this support ticket: 'My new e-bike battery died after two days, help!' Reply with a JSON "
                 "object: sentiment, score (1 to 5), up to three one-word tags, and the product (name, urgent).")
# The first eight items fill one chunk with the same sampling parameters: one batched generate call mixes
# two schemas, any JSON object and free text.
LINES = [
    line("email-1", EMAIL_PROMPT, seed=1, response_format=fmt("email", EMAIL)),
    line("plain-1", "Name three fruits.", seed=2),
    line("ticket-1", TICKET_PROMPT, seed=3, response_format=fmt("ticket", TICKET)),
    line("email-2", EMAIL_PROMPT, seed=4, n=2, response_format=fmt("email", EMAIL)),
    line("object-1", "Describe a bicycle as a JSON object with two short fields.", seed=5,
         response_format={"type": "json_object"}),
    line("plain-2", "Say hello to Ana.", seed=6),
    line("ticket-2", TICKET_PROMPT, seed=7, response_format=fmt("ticket", TICKET)),
    line("cut-1", EMAIL_PROMPT, seed=8, max_tokens=6, response_format=fmt("email", EMAIL)),
]
PRODUCT = Product.model_json_schema()
# 42 more lines, so the batch holds 50 that mix every schema above with free text, chunk after chunk.
EXTRA = [line(f"ticket-x{n}", TICKET_PROMPT, seed=100 + n, response_format=fmt("ticket", TICKET))
         for n in range(14)]
EXTRA += [line(f"product-x{n}", f"Describe product number {n} of our bike shop as JSON: its name and whether a "
               "customer needs it urgently.", seed=200 + n, max_tokens=60, response_format=fmt("product", PRODUCT))
          for n in range(14)]
EXTRA += [line(f"plain-x{n}", f"Give one tip for cycling in the rain (tip {n}).", seed=300 + n, max_tokens=24)
          for n in range(14)]
FIRST_CHUNK = [x["custom_id"] for x in LINES]
LINES = LINES + EXTRA
SCHEMAS = {"email": EMAIL, "ticket": TICKET, "product": PRODUCT}


def jsonl(lines: list[dict[str, Any]]) -> bytes:
    return b"".join(json.dumps(x).encode() + b"\n" for x in lines)


def run_batch(client: OpenAI, lines: list[dict[str, Any]]) -> tuple[dict[str, Any], dict[str, Any], str]:
    """(output lines by custom_id, error lines by custom_id, batch id) of a completed batch."""
    file = client.files.create(file=("in.jsonl", jsonl(lines)), purpose="batch")
    batch = client.batches.create(input_file_id=file.id, endpoint="/v1/chat/completions", completion_window="24h")
    deadline = time.monotonic() + 1800
    while batch.status not in TERMINAL and time.monotonic() < deadline:
        time.sleep(1)
        batch = client.batches.retrieve(batch.id)
    assert batch.status == "completed", batch
    files = [batch.output_file_id, batch.error_file_id]
    found = [[json.loads(x) for x in client.files.content(f).text.splitlines()] if f else [] for f in files]
    return {x["custom_id"]: x for x in found[0]}, {x["custom_id"]: x for x in found[1]}, batch.id


def test_structured_outputs_with_the_real_model(
    pg_db: str, broker_url: str, s3_server: SeaweedS3, s3_bucket: str, tmp_path: Path,
    request: pytest.FixtureRequest,
) -> None:
    env = stack_env(pg_db, broker_url, s3_server.endpoint, s3_bucket, FACTORY_MODEL_CACHE_DIR=str(MODEL_CACHE),
                    FACTORY_CHUNK_SIZE="8")
    with api_server(env, tmp_path / "api.log") as url, worker(env, tmp_path / "worker.log"):
        client = OpenAI(base_url=f"{url}/v1", api_key=api_key(pg_db))
        request.addfinalizer(client.close)

        # The SDK's structured-output helper, unchanged: a pydantic model in, a parsed instance out.
        parsed = client.chat.completions.parse(
            model=MODEL, messages=[{"role": "user", "content": TICKET_PROMPT}], response_format=Ticket,
            max_tokens=120, temperature=0.2, seed=11)
        # Too few tokens for the document: refused with the reason, not answered with cut-off JSON.
        with pytest.raises(openai.UnprocessableEntityError) as cut:
            client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": EMAIL_PROMPT}],
                                           response_format=fmt("email", EMAIL), max_tokens=5)  # type: ignore[arg-type]
        # A schema the grammar cannot enforce: 422 at submit, naming its path.
        with pytest.raises(openai.UnprocessableEntityError) as bad:
            client.chat.completions.create(
                model=MODEL, messages=[{"role": "user", "content": "x"}],
                response_format=fmt("bad", {"type": "array", "uniqueItems": True}))  # type: ignore[arg-type]

        output, errors, batch_id = run_batch(client, LINES)
        # The same lines without their response_format: the same prompts, so the same padding in each call.
        free, _, _ = run_batch(client, [{**x, "body": {k: v for k, v in x["body"].items() if k != "response_format"}}
                                     for x in LINES[:len(FIRST_CHUNK)] if x["custom_id"] != "cut-1"])

    message = parsed.choices[0].message
    assert isinstance(message.parsed, Ticket) and parsed.choices[0].finish_reason == "stop"
    assert 1 <= message.parsed.score <= 5 and len(message.parsed.tags) <= 3
    jsonschema_rs.validate(Ticket.model_json_schema(), json.loads(message.content or ""))
    assert cut.value.body["code"] == "structured_output_incomplete"  # type: ignore[index]
    assert cut.value.body["param"] == "max_tokens" and "max_tokens (5)" in cut.value.body["message"]  # type: ignore[index]
    assert bad.value.body["param"] == "response_format.json_schema.schema.uniqueItems"  # type: ignore[index]

    # Every structured line but the one without room parses and validates against its schema.
    assert sorted(output) == sorted(x["custom_id"] for x in LINES if x["custom_id"] != "cut-1"), json.dumps(errors)
    checked = 0
    for custom_id, out in output.items():
        body = out["response"]["body"]
        kind = custom_id.split("-")[0]
        for choice in body["choices"]:
            assert choice["finish_reason"] in (("stop",) if kind != "plain" else ("stop", "length"))
            if kind in SCHEMAS:
                jsonschema_rs.validate(SCHEMAS[kind], json.loads(choice["message"]["content"]))
                checked += 1
            elif kind == "object":
                assert isinstance(json.loads(choice["message"]["content"]), dict)
                checked += 1
    assert len(LINES) == 50 and checked == 6 + 28 and len(output["email-2"]["response"]["body"]["choices"]) == 2
    for n in range(14):
        assert output[f"plain-x{n}"]["response"]["body"]["choices"][0]["message"]["content"].strip()
    # Plain lines are generated as if the structured lines sharing their batched calls were free text.
    for custom_id in ("plain-1", "plain-2"):
        assert output[custom_id]["response"]["body"]["choices"] == free[custom_id]["response"]["body"]["choices"]
    assert output["email-1"]["response"]["body"]["choices"] != free["email-1"]["response"]["body"]["choices"]
    # The line that could not finish inside max_tokens failed, saying so.
    assert list(errors) == ["cut-1"]
    error = errors["cut-1"]["response"]["body"]["error"]
    assert error["code"] == "structured_output_incomplete" and "max_tokens (6)" in error["message"]

    with get_sessionmaker(pg_db)() as s:
        batch = s.get(Batch, batch_id)
        assert batch is not None
        items = {i.key: i for i in s.scalars(select(Item).where(Item.job_id == batch.job_id))}
    assert items["email-1"].provenance["response_format"] == {  # type: ignore[index]
        "type": "json_schema", "name": "email", "strict": True, "schema_sha256": schema_sha256(EMAIL)}
    assert items["object-1"].provenance["response_format"] == {"type": "json_object"}  # type: ignore[index]
    assert "response_format" not in (items["plain-1"].provenance or {})
    assert items["cut-1"].provenance["finish_reason"] == "length"  # type: ignore[index]
