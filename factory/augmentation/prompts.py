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

from collections.abc import Sequence

from factory.provenance.hashing import sha256_text

Message = dict[str, str]

PARAPHRASE_ASK = ("Rewrite this sentence in different words. Keep the meaning and the intent ({intent}).\n"
                  "Sentence: {text}")
# One worked example, so the model answers with a rewrite and nothing else.
PARAPHRASE_DEMO = ("My package never came.", "track order", "My parcel still hasn't arrived.")
GENERATE_ASK = "Write a short message from a customer with the intent: {intent}."

PROMPTS_TEXT = "\n---\n".join((PARAPHRASE_ASK, " | ".join(PARAPHRASE_DEMO), GENERATE_ASK))
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
