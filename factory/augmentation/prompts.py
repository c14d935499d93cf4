"""The chat prompts for the LLM methods, rendered at submit time and stored on each item.

Both name the label (its description when given, else the label with spaces) so
the model keeps it: a paraphrase that drifts to another intent is worse than none.
Examples are given as earlier chat turns rather than as a list in one message:
small instruction models imitate a turn they have "already answered" far more
reliably than they follow a description of the format (measured on SmolLM2-135M:
a list-style prompt drew long, off-topic answers; turns drew one short message).
The wording is fingerprinted by ``PROMPTS_SHA256``, recorded as the job's
``template_sha256`` and so in every item's provenance.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from factory.provenance.hashing import schema_sha256, sha256_text

Message = dict[str, str]

PARAPHRASE_ASK = ("Rewrite this sentence in different words. Keep the meaning and the intent ({intent}).\n"
                  "Sentence: {text}")
# One worked example, so the model answers with a rewrite and nothing else.
PARAPHRASE_DEMO = ("My package never came.", "track order", "My parcel still hasn't arrived.")
GENERATE_ASK = "Write a short message from a customer with the intent: {intent}."
RECORD_ASK = " Answer with a JSON object: the message as text, and the label."
RECORD_MAX_CHARS = 280  # a short customer message; the schema's maxLength on ``text``
RECORD_TOKENS = 24  # max_new_tokens added for the record's JSON around the text (keys, quotes, the label)

PROMPTS_TEXT = "\n---\n".join((PARAPHRASE_ASK, " | ".join(PARAPHRASE_DEMO), GENERATE_ASK, RECORD_ASK))
PROMPTS_SHA256 = sha256_text(PROMPTS_TEXT)


def intent(label: str, description: str | None) -> str:
    return description or label.replace("_", " ")


def paraphrase_messages(text: str, label: str, description: str | None) -> list[Message]:
    demo_text, demo_intent, demo_answer = PARAPHRASE_DEMO
    return [
        {"role": "user", "content": PARAPHRASE_ASK.format(intent=demo_intent, text=demo_text)},
        {"role": "assistant", "content": demo_answer},
        {"role": "user", "content": PARAPHRASE_ASK.format(intent=intent(label, description), text=text)},
    ]


def generate_messages(label: str, description: str | None, examples: Sequence[str]) -> list[Message]:
    ask = GENERATE_ASK.format(intent=intent(label, description))
    messages: list[Message] = []
    for example in examples:
        messages += [{"role": "user", "content": ask}, {"role": "assistant", "content": example}]
    return [*messages, {"role": "user", "content": ask}]


def record_schema(label: str) -> dict[str, Any]:
    """What a structured ``generate`` answer is: the new message and the label it was asked for."""
    return {"type": "object",
            "properties": {"text": {"type": "string", "minLength": 1, "maxLength": RECORD_MAX_CHARS},
                           "label": {"const": label}},
            "required": ["text", "label"], "additionalProperties": False}


def record_format(label: str) -> dict[str, Any]:
    """The item's response_format, as factory/structured/checks.py writes one for a request."""
    schema = record_schema(label)
    return {"type": "json_schema", "name": "record", "schema": schema, "schema_sha256": schema_sha256(schema)}


def generate_record_messages(label: str, description: str | None, examples: Sequence[str]) -> list[Message]:
    """``generate_messages`` with each example answered as the record the model is held to."""
    ask = GENERATE_ASK.format(intent=intent(label, description)) + RECORD_ASK
    messages: list[Message] = []
    for example in examples:
        answer = json.dumps({"text": example, "label": label}, ensure_ascii=False, separators=(",", ":"))
        messages += [{"role": "user", "content": ask}, {"role": "assistant", "content": answer}]
    return [*messages, {"role": "user", "content": ask}]
