"""The checks every output passes before it counts as ready: one function, named results.

A failed check is named ``field:check`` (``subject:too_long``) or ``check`` for the
whole copy (``language``). Lengths are measured with every merge tag filled by the
longest value it takes (the worst case in a segment), so copy that passes fits
every recipient it goes to.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from factory.channels import personal
from factory.channels import text as T
from factory.channels.sms import count_sms, smart_encode
from factory.channels.specs import ChannelSpec

# Placeholders a model leaves for someone else to fill: [Name], <city>, {product}, {{ x }}, XXX.
_PLACEHOLDERS = re.compile(
    r"\{\{|\}\}|\{%|%\}|\{[A-Za-z_ ]{1,30}\}|\[[A-Za-z][A-Za-z'’ _-]{0,30}\]|<[A-Za-z][A-Za-z _-]{0,30}>"
    r"|«|»|\bX{3,}\b|\blorem ipsum\b",
    re.IGNORECASE,
)
# Words of the request itself coming back as copy ("Preheader: One short sentence.").
_INSTRUCTION_ECHO = re.compile(
    r"\b(?:one short sentence|short sentences|subject line|preheader|email body|text message|at most \d+ words"
    r"|customer data|brief:|campaign:|customers?:)",
    re.IGNORECASE,
)
# A number as written: 20, 4.99, 1,200 (a percent or currency sign around it does not matter).
_NUMBER = re.compile(r"\d+(?:[.,]\d+)*")
MIN_WORDS = {"line": 2, "prose": 3}
LANGUAGE_MIN_WORDS = 4
READING_MIN_WORDS = 12
EMAIL_BODY_MAX_CHARS = 2000  # no channel limit, but a runaway body is not an email


@dataclass(frozen=True)
class CheckRules:
    """Everything the checks need to know, brand and campaign rules already resolved."""

    channel: ChannelSpec
    language: str | None = "en"
    banned: tuple[str, ...] = ()
    required: tuple[str, ...] = ()  # phrases the main field must contain (a legal footer)
    emoji_allowed: bool = False
    reading_grade_max: float | None = None
    merge_tags: frozenset[str] = frozenset()
    merge_worst: Mapping[str, str] = field(default_factory=dict)
    sms_max_segments: int = 1
    opening: str | None = None  # the start of the main field, written by the marketer
    brand_name: str = ""
    # personalize_with: the recipient's value of each field the copy must use (personal.py).
    personalize: Mapping[str, str] = field(default_factory=dict)
    # The text a copy's facts may come from (its brief: the campaign and the recipient's values). A
    # number (a price, a percentage, a date) in the model's own words that the brief does not hold is
    # invented. None: not checked (a human-written control).
    facts: str | None = None


def phrase_pattern(phrase: str) -> re.Pattern[str]:
    """Whole-word, case-insensitive match of a word or phrase."""
    return re.compile(r"(?<!\w)" + r"\s+".join(re.escape(p) for p in phrase.split()) + r"(?!\w)", re.IGNORECASE)


def worst_case(text: str, rules: CheckRules) -> str:
    return T.fill_merge_tags(text, rules.merge_worst, rules.merge_tags)


def without_fixed_text(text: str, rules: CheckRules) -> str:
    """The model's own words: required phrases, the opening and merge tags taken out."""
    for phrase in rules.required:
        text = text.replace(phrase, " ")
    if rules.opening and text.startswith(rules.opening):
        text = text[len(rules.opening):]
    return T.MERGE_TAG.sub(" ", text).strip()


def leftover_placeholders(text: str, rules: CheckRules) -> list[str]:
    allowed = T.MERGE_TAG.sub(lambda m: " " if m.group(1) in rules.merge_tags else m.group(0), text)
    return _PLACEHOLDERS.findall(allowed)


def length_failure(name: str, text: str, rules: CheckRules) -> str | None:
    spec = rules.channel.field(name)
    measured = worst_case(text, rules)
    if rules.channel.name == "sms":
        # Sent smart-encoded (exports do it per recipient), so measured that way.
        return None if count_sms(smart_encode(measured)).segments <= rules.sms_max_segments else "sms_segments"
    limit = spec.max_chars or (EMAIL_BODY_MAX_CHARS if spec.kind == "prose" else None)
    return "too_long" if limit is not None and len(measured) > limit else None


def check_field(name: str, text: str, rules: CheckRules, truncated: bool = False) -> list[str]:
    spec = rules.channel.field(name)
    own = without_fixed_text(text, rules)
    failed: list[str] = []
    if len(T.words(own)) < MIN_WORDS[spec.kind]:
        failed.append("empty")
    if spec.kind == "line" and "\n" in text:
        failed.append("multiline")
    if (failure := length_failure(name, text, rules)) is not None:
        failed.append(failure)
    if leftover_placeholders(text, rules):
        failed.append("placeholder")
    if _INSTRUCTION_ECHO.search(without_fixed_text(text, rules)):
        failed.append("instruction_echo")
    if truncated or (spec.kind == "prose" and own and not T.ends_a_sentence(_before_required(text, rules))):
        failed.append("truncated")
    if any(phrase_pattern(p).search(text) for p in rules.banned):
        failed.append("banned_phrase")
    if not rules.emoji_allowed and T.has_emoji(text):
        failed.append("emoji")
    if rules.facts is not None and invented_numbers(text, rules):
        failed.append("invented_number")
    if name == rules.channel.main:
        if any(p not in text for p in rules.required):
            failed.append("required_phrase")
        if rules.reading_grade_max is not None and len(T.words(own)) >= READING_MIN_WORDS \
                and T.reading_grade(own) > rules.reading_grade_max:
            failed.append("reading_level")
    return [f"{name}:{f}" for f in failed]


def invented_numbers(text: str, rules: CheckRules) -> list[str]:
    """Numbers in the model's own words (required phrases, the opening and merge tags taken out) that
    its brief does not hold: "30% off" when the brief says 20%, "until May 5" when it gives no date."""
    known = set(_NUMBER.findall(rules.facts or ""))
    return [n for n in _NUMBER.findall(without_fixed_text(text, rules)) if n not in known]


def _before_required(text: str, rules: CheckRules) -> str:
    """The text before a trailing required phrase (a footer need not end a sentence)."""
    stripped = text.rstrip()
    changed = True
    while changed:
        changed = False
        for phrase in rules.required:
            if phrase and stripped.endswith(phrase):
                stripped, changed = stripped[: -len(phrase)].rstrip(), True
    return stripped


def check_language(fields: Mapping[str, str], rules: CheckRules) -> list[str]:
    if not rules.language:
        return []
    own = " ".join(without_fixed_text(t, rules) for t in fields.values())
    if len(T.words(own)) < LANGUAGE_MIN_WORDS:
        return []
    return [] if T.detect_language(own) == rules.language else ["language"]


def check_copy(fields: Mapping[str, str], rules: CheckRules, truncated: frozenset[str] = frozenset()) -> list[str]:
    """Every failed check of a whole copy (all of the channel's fields); empty means it passes."""
    failed: list[str] = []
    for name in rules.channel.field_names:
        if name not in fields:
            failed.append(f"{name}:missing")
            continue
        failed += check_field(name, fields[name], rules, name in truncated)
    return failed + check_language(fields, rules) + check_personalization(fields, rules)


def copy_text(fields: Mapping[str, str], rules: CheckRules) -> str:
    """Every field of a copy as the recipient reads it (merge tags filled)."""
    return "\n".join(worst_case(fields[name], rules) for name in rules.channel.field_names if name in fields)


def check_personalization(fields: Mapping[str, str], rules: CheckRules) -> list[str]:
    if not rules.personalize:
        return []
    return personal.failures(copy_text(fields, rules), rules.personalize, rules.language)
