"""A copy as ONE structured request (``generation: "json"``): every field of the channel in one JSON object.

The other way (``"fields"``, prompting.py) asks for each field on its own, its answer
prefilled with the field's label. Here the model answers one object — an email's
``{"subject", "preheader", "body"}`` — under a JSON schema the worker enforces token by
token (constrained decoding, ``workers/generators/structured.py``), so the answer always
parses. Where a field has a hard limit in characters the schema says so (``maxLength``):
the grammar then closes the string at the limit, and a value that reached it is handed to
the repairs as cut off (trimmed back to a sentence or clause) rather than passed mid-word.
The brand's repairs and checks apply to the fields exactly as on the field-by-field path;
a copy that fails them is asked for again whole, with a new seed. Which path a campaign
uses by default was chosen by measurement (docs/structured-outputs.md). Pure: no model here.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from factory.campaigns.plan import CampaignPlan, MessagePlan
from factory.campaigns.prompting import example_opening, opening_for, system_message
from factory.channels.specs import EXAMPLE_BRIEF, EXAMPLE_SEGMENT_BRIEF, ChannelSpec, FieldSpec, channel
from factory.provenance.hashing import canonical_json, schema_sha256, sha256_text

COPY = "copy"  # the name of the one request per copy (its seed's key, its fingerprint's)
# Tokens for the JSON around the values: braces, quotes, keys and commas.
JSON_TOKENS_PER_FIELD = 8
SMS_SEGMENT_CHARS = 160


@dataclass(frozen=True)
class CopyRequest:
    messages: tuple[dict[str, str], ...]
    schema: dict[str, Any]
    schema_json: str  # compact, as the worker compiles it
    schema_sha256: str
    max_new_tokens: int


def _max_chars(spec: FieldSpec, message: MessagePlan) -> int | None:
    if spec.max_chars is not None:
        return spec.max_chars
    if message.channel == "sms":
        return SMS_SEGMENT_CHARS * message.sms_max_segments
    return None


def copy_schema(message: MessagePlan) -> dict[str, Any]:
    """The object one copy is: each field a non-empty string, bounded where the channel bounds it."""
    props: dict[str, Any] = {}
    for spec in channel(message.channel).fields:
        prop: dict[str, Any] = {"type": "string", "minLength": 1}
        limit = _max_chars(spec, message)
        if limit is not None:
            prop["maxLength"] = limit
        props[spec.name] = prop
    return {"type": "object", "properties": props, "required": list(props), "additionalProperties": False}


def _instruction(spec: ChannelSpec, opening: str | None) -> str:
    parts = [f"Write the {spec.name.replace('_', ' ')} as one JSON object with the fields "
             + ", ".join(f.name for f in spec.fields) + "."]
    parts += [f"{f.name}: {f.instruction.removeprefix('Write ')}" for f in spec.fields]
    if opening:
        parts.append(f"The {spec.main} starts with: {opening}")
    return "\n".join(parts)


def _example_answer(spec: ChannelSpec, message: MessagePlan) -> str:
    answer = {f.name: f.example for f in spec.fields}
    if message.opening:
        opening = example_opening(message.opening)
        body = answer[spec.main]
        if opening.rstrip().endswith(","):
            body = body[:1].lower() + body[1:]
        answer[spec.main] = f"{opening} {body}"
    return json.dumps(answer, ensure_ascii=False, separators=(",", ":"))


def copy_request(plan: CampaignPlan, message: MessagePlan, brief: str, merge_values: Mapping[str, Any]) -> CopyRequest:
    spec = channel(message.channel)
    opening = opening_for(plan, message, merge_values)
    example_brief = EXAMPLE_BRIEF if plan.mode == "recipient" else EXAMPLE_SEGMENT_BRIEF
    shown_opening = example_opening(message.opening) if message.opening else None
    schema = copy_schema(message)
    schema_json = json.dumps(schema, separators=(",", ":"), ensure_ascii=False)
    tokens = sum(message.max_new_tokens.get(f.name, f.max_new_tokens) for f in spec.fields)
    return CopyRequest(
        messages=(
            {"role": "system", "content": system_message(plan, message)},
            {"role": "user", "content": f"{example_brief}\n{_instruction(spec, shown_opening)}"},
            {"role": "assistant", "content": _example_answer(spec, message)},
            {"role": "user", "content": f"{brief}\n{_instruction(spec, opening)}"},
        ),
        schema=schema, schema_json=schema_json, schema_sha256=schema_sha256(schema),
        max_new_tokens=tokens + JSON_TOKENS_PER_FIELD * len(spec.fields) + 4,
    )


def request_fingerprint(req: CopyRequest) -> str:
    return sha256_text(canonical_json([list(req.messages), req.schema, req.max_new_tokens]))


def parse_copy(plan: CampaignPlan, message: MessagePlan, merge_values: Mapping[str, Any],
               text: str) -> tuple[dict[str, str], dict[str, str]]:
    """The answer as the field-by-field path's raw fields and finish reasons.

    The main field loses the opening when it starts with it (the repairs put it back, as
    for a prefilled answer); a value that filled its ``maxLength`` counts as cut off.
    Raises ValueError for an answer that is not the object asked for.
    """
    doc = json.loads(text)
    spec = channel(message.channel)
    if not isinstance(doc, dict) or any(not isinstance(doc.get(f.name), str) for f in spec.fields):
        raise ValueError("the answer is not the copy object")
    opening = opening_for(plan, message, merge_values)
    raw: dict[str, str] = {}
    finish: dict[str, str] = {}
    for field in spec.fields:
        value = str(doc[field.name]).strip()
        limit = _max_chars(field, message)
        finish[field.name] = "length" if limit is not None and len(value) >= limit else "stop"
        if field.name == spec.main and opening and value.startswith(opening):
            value = value[len(opening):].strip()
        raw[field.name] = value
    return raw, finish
