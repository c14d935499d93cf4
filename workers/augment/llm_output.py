"""Turning a model's answer into one clean utterance, and spotting prompt text left in it.

Small instruction models wrap the answer ("Sure! Here is a rewritten version:",
quotes, a "Rewritten message:" label, a second paragraph of explanation).
``clean`` keeps the first line that is not an announcement and strips labels
and quotes; whatever still reads like an answer to the prompt rather than a
customer message is caught by ``prompt_leftover`` and filtered (and counted).
"""

from __future__ import annotations

import re

_ANSWER_LABEL = re.compile(
    r"^\s*(?:\*\*)?(?:rewritten(?: message| version| text)?|paraphrase(?:d)?(?: message| version)?|"
    r"new(?: customer)? message|customer message|message|example|answer|output)(?:\*\*)?\s*[:：-]\s*",
    re.IGNORECASE,
)
_QUOTES = {'"': '"', "“": "”", "'": "'", "«": "»", "„": "“"}

LEFTOVER = re.compile(
    r"^(?:sure|certainly|of course|absolutely|okay|ok)\b\s*[!,.:]"
    r"|\bhere(?:'s|’s| is| are)\b(?: (?:a|an|the|your|some|my|one))?(?: \w+)? "
    r"(?:rewrit\w*|paraphras\w*|version|variant|example|message|sentence|alternative)"
    r"|\b(?:rewritten|paraphrased|new|original) (?:customer )?(?:message|version|text|sentence)\b"
    r"|\bas an ai\b|\bi(?: am|'m) (?:sorry|unable|an ai)\b|\bi (?:cannot|can't|can not)\b (?:help|assist|rewrite)"
    r"|\bthe intent\b|\bintent:|\brewrite\b|\bparaphrase\b",
    re.IGNORECASE,
)


def _strip_quotes(text: str) -> str:
    if len(text) >= 2 and _QUOTES.get(text[0]) == text[-1]:
        return text[1:-1].strip()
    if text[:1] in _QUOTES and text.count(text[0]) == 1 and _QUOTES[text[0]] not in text[1:]:
        return text[1:].strip()  # an opening quote the answer never closed (cut at max tokens)
    return text


def clean(text: str) -> str:
    """The answer's one utterance: first real line, without a leading label or wrapping quotes."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    while len(lines) > 1 and (lines[0].endswith(":") or _ANSWER_LABEL.fullmatch(lines[0] + " ")):
        lines.pop(0)
    first = lines[0] if lines else ""
    first = _strip_quotes(_ANSWER_LABEL.sub("", first, count=1).strip())
    return " ".join(first.split())


def prompt_leftover(text: str) -> bool:
    """True when the text still talks about the task ("Sure! Here's a rewritten message")."""
    return LEFTOVER.search(text) is not None
