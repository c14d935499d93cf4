"""Deterministic repairs a copy editor would make before a copy is checked.

Each repair is recorded by name (``body:trim_to_sentence``) in the item's
provenance, so a reader can tell generated words from edited ones. Repairs never
invent copy: they remove chatter around the answer (preambles, labels, markdown,
quotes), put known values into placeholders the model left, swap avoided terms for
preferred ones, drop emoji a brand does not use, cut text back to the last complete
sentence that fits (a line such as a subject may also end at a clause boundary or,
failing that, at a word boundary without a dangling last word), and append
required phrases (a legal footer) that are missing. What still fails is
regenerated with a new seed.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from factory.channels import text as T
from factory.channels.checks import CheckRules, length_failure, phrase_pattern, worst_case
from factory.channels.sms import smart_encode
from factory.channels.specs import CHANNELS

_PREAMBLE = re.compile(
    r"^\s*(?:(?:sure|certainly|of course|absolutely|okay|ok|great)\b[!,.]*\s*)?"
    r"(?:here(?:'s| is| are)\b[^:\n]{0,80}:\s*)",
    re.IGNORECASE,
)
_ALL_LABELS = sorted({f.label.rstrip(":").lower() for c in CHANNELS.values() for f in c.fields}
                     | {"subject line", "email subject", "text message", "message", "sms text"}, key=len, reverse=True)
_LABEL = re.compile(r"^\s*(?:" + "|".join(re.escape(x) for x in _ALL_LABELS) + r")\s*:\s*", re.IGNORECASE)
# A new labelled part ("Preheader: ...", "P.S. ...", "Bridget: ...") ends the answer for this field.
_NEXT_PART = re.compile(r"\n+\s*(?:[A-Z][\w .'-]{0,24}:|P\.?S\.?\b)")
_MARKDOWN = re.compile(r"\*\*(.+?)\*\*|__(.+?)__|`([^`]*)`")
_QUOTES = {'"': '"', "“": "”", "'": "'", "‘": "’", "«": "»"}
_NAME_PLACEHOLDERS = {"name", "first name", "firstname", "customer name", "customer's name", "customer",
                      "recipient", "recipient name", "recipient's name", "client name", "client's name",
                      "full name", "customer first name"}
_BRAND_PLACEHOLDERS = {"company", "company name", "brand", "brand name", "your company", "store name",
                       "shop name", "your name", "sender", "sender name", "our company", "business name",
                       "your company name", "store"}
_BRACKETED = re.compile(r"\[([A-Za-z][A-Za-z'’ _-]{0,30})\]|<([A-Za-z][A-Za-z _-]{0,30})>")
_CLAUSE_BREAK = re.compile(r"\s*(?:,|;|:| -| –| —)\s")
# Words a line cut short must not end on: each promises more words after it
# ("...for every trail you love to", "...boots and", "...at Trailhead's").
_DANGLING = frozenset("""
a an the and or but nor so yet plus to of for with in on at by from into onto about as than through via like
without within your our my their his her its this that these those every each which who whose where when while
because if is are was were be been will can could would should has have had
""".split())
# Words that open a new phrase: a line cut just before one ends on a whole phrase.
_PHRASE_OPENERS = frozenset("""
and or but nor so yet plus to of for with in on at by from into onto about as than through via like without
within which who whose where when while because if during including until after before since
""".split())
_CUT_PUNCTUATION = " ,;:-–—&/+"
_PAIRS = (("(", ")"), ("[", "]"), ("“", "”"), ("«", "»"))  # not ‘’: ’ is also an apostrophe


@dataclass
class RepairedCopy:
    fields: dict[str, str]
    repairs: list[str] = field(default_factory=list)
    truncated: set[str] = field(default_factory=set)  # line fields cut off by the token limit, not repaired


def _step(fields_repairs: list[str], name: str, repair: str, before: str, after: str) -> str:
    if after != before:
        fields_repairs.append(f"{name}:{repair}")
    return after


def _strip_quotes(text: str) -> str:
    t = text.strip()
    while len(t) >= 2 and t[0] in _QUOTES and t[-1] == _QUOTES[t[0]] and t.count(t[0]) <= 2:
        t = t[1:-1].strip()
    return t


def _fill_placeholders(text: str, name_tag: str | None, brand_name: str) -> str:
    def sub(m: re.Match[str]) -> str:
        inner = (m.group(1) or m.group(2) or "").strip().lower().replace("_", " ")
        if inner in _NAME_PLACEHOLDERS and name_tag:
            return "{{" + name_tag + "}}"
        if inner in _BRAND_PLACEHOLDERS and brand_name:
            return brand_name
        return m.group(0)

    return _BRACKETED.sub(sub, text)


def _preferred(text: str, preferred: Mapping[str, str]) -> str:
    for avoid, prefer in preferred.items():
        def sub(m: re.Match[str], prefer: str = prefer) -> str:
            return prefer[:1].upper() + prefer[1:] if m.group(0)[:1].isupper() else prefer

        text = phrase_pattern(avoid).sub(sub, text)
    return text


def _clean(raw: str, kind: str) -> tuple[str, list[tuple[str, Callable[[str], str]]]]:
    steps: list[tuple[str, Callable[[str], str]]] = [
        ("strip_preamble", lambda t: _PREAMBLE.sub("", t, count=1)),
        ("strip_label", lambda t: _LABEL.sub("", t, count=1)),
        ("cut_extra_parts", lambda t: _NEXT_PART.split(t, maxsplit=1)[0]),
        ("strip_markdown", lambda t: re.sub(r"^\s*#+\s*", "", _MARKDOWN.sub(lambda m: next(g for g in m.groups()
                                                                                          if g is not None), t))),
        ("strip_quotes", _strip_quotes),
        ("strip_data_delimiters", lambda t: t.replace("«", "").replace("»", "")),
    ]
    if kind == "line":
        steps.append(("first_line", lambda t: next((ln.strip() for ln in t.splitlines() if ln.strip()), "")))
    return raw, steps


def _fits(name: str, text: str, rules: CheckRules) -> bool:
    return length_failure(name, text, rules) is None


def trim_to_sentence(name: str, head: str, body: str, tail: str, rules: CheckRules) -> str | None:
    """The longest run of whole sentences of ``body`` that ends a sentence and fits; None if none does."""
    parts = T.sentences(body)
    for n in range(len(parts), 0, -1):
        kept = " ".join(parts[:n])
        if T.ends_a_sentence(kept) and _fits(name, _join(head, kept, tail), rules):
            return kept
    return None


def trim_to_clause(name: str, text: str, rules: CheckRules, min_words: int = 3) -> str | None:
    """A line cut at its last clause boundary (comma, colon, dash) that fits and keeps a few words."""
    cuts = [m.start() for m in _CLAUSE_BREAK.finditer(text)]
    for cut in reversed(cuts):
        kept = text[:cut].rstrip(" ,;:-–—")
        if len(T.words(kept)) >= min_words and _fits(name, kept, rules):
            return kept
    return None


def trim_to_word(name: str, text: str, rules: CheckRules, min_words: int = 3) -> str | None:
    """A too-long line cut at the last word boundary that fits, without a dangling last word.

    The last resort for a line (subject, preheader, title, headline) whose one
    sentence has no clause boundary to end at: words are dropped from the end until
    it fits, then trailing words that promise more (``and``, ``for``, ``your``, a
    possessive) and trailing punctuation go too; a cut inside brackets or quotes moves
    back before them. Merge tags are whole words, so they are never split. None (no
    trim: the copy fails and is regenerated) when what is left would have fewer than
    ``min_words`` words or be under half the field's limit: that is a different line,
    not the same one shortened.
    """
    limit = rules.channel.field(name).max_chars
    if limit is None or _fits(name, text, rules):
        return None
    tokens = text.split()

    def longest(cuts: list[int]) -> str | None:
        for n in cuts:
            kept = _without_dangling(tokens[:n])
            if not _fits(name, kept, rules) or not _balanced(kept):
                continue
            if len(T.words(kept)) < min_words or len(worst_case(kept, rules)) < limit / 2:
                return None
            return kept
        return None

    cuts = list(range(len(tokens) - 1, 0, -1))
    # First choice: end where a phrase began ("... season | and offers ...", "... access | to all trail
    # running gear"), so the line ends on a whole phrase rather than on the first half of one.
    return longest([n for n in cuts if _bare(tokens[n]) in _PHRASE_OPENERS]) or longest(cuts)


def _bare(token: str) -> str:
    return token.rstrip(_CUT_PUNCTUATION).strip("\"'“”‘’()[]«»").lower()


def _without_dangling(tokens: list[str]) -> str:
    kept = list(tokens)
    while kept:
        last, bare = kept[-1].rstrip(_CUT_PUNCTUATION), _bare(kept[-1])
        if not bare or bare in _DANGLING or bare.endswith(("'s", "’s")):
            kept.pop()
            continue
        kept[-1] = last
        break
    return " ".join(kept)


def _balanced(text: str) -> bool:
    return text.count('"') % 2 == 0 and all(text.count(a) == text.count(b) for a, b in _PAIRS)


def _join(head: str, body: str, tail: str) -> str:
    out = head
    if body:
        out = f"{out} {body}" if out and body[:1] not in ",.!?;:" else out + body
    if tail:
        out = f"{out} {tail}" if out else tail
    return out.strip()


def repair_copy(raw: Mapping[str, str], finish: Mapping[str, str], rules: CheckRules, *,
                preferred: Mapping[str, str] | None = None, name_tag: str | None = None) -> RepairedCopy:
    """Turn the model's answers (continuations after each field's prefill) into a copy to check.

    ``raw[field]`` is what the model wrote; for the main field it follows the opening,
    which is put back in front here. ``finish[field]`` is "stop" or "length".
    """
    out = RepairedCopy(fields={})
    for spec in rules.channel.fields:
        if spec.name not in raw:
            continue
        name, t = spec.name, raw[spec.name]
        _, steps = _clean(t, spec.kind)
        for repair, fn in steps:
            t = _step(out.repairs, name, repair, t, fn(t))
        t = _step(out.repairs, name, "fill_placeholder", t, _fill_placeholders(t, name_tag, rules.brand_name))
        t = _step(out.repairs, name, "preferred_terms", t, _preferred(t, preferred or {}))
        if not rules.emoji_allowed:
            t = _step(out.repairs, name, "strip_emoji", t, T.strip_emoji(t))
        t = T.normalise_merge_tags(re.sub(r"\s+", " ", t).strip())
        if spec.kind == "line":
            out.fields[name] = _finish_line(name, t, finish.get(name) == "length", rules, out)
        else:
            out.fields[name] = _finish_prose(name, t, finish.get(name) == "length", rules, out)
        if rules.channel.name == "sms":
            out.fields[name] = _step(out.repairs, name, "smart_encoding", out.fields[name],
                                     smart_encode(out.fields[name]))
    return out


def _finish_line(name: str, t: str, cut_off: bool, rules: CheckRules, out: RepairedCopy) -> str:
    t = t.rstrip(" ,;:-–—")
    if not cut_off and _fits(name, t, rules):
        return t
    parts = T.sentences(t)
    if len(parts) > 1:
        kept = trim_to_sentence(name, "", t, "", rules)
        if kept is not None:
            out.repairs.append(f"{name}:trim_to_sentence")
            return kept
    kept = trim_to_clause(name, t, rules)
    if kept is not None:
        out.repairs.append(f"{name}:trim_to_clause")
        return kept
    kept = trim_to_word(name, t, rules)
    if kept is not None:
        out.repairs.append(f"{name}:trim_to_word")
        return kept
    if cut_off:
        out.truncated.add(name)
    return t


def _finish_prose(name: str, t: str, cut_off: bool, rules: CheckRules, out: RepairedCopy) -> str:
    head = rules.opening if name == rules.channel.main and rules.opening else ""
    if head and t.startswith(head):
        t = t[len(head):].lstrip()
    missing = [p for p in rules.required if p not in t] if name == rules.channel.main else []
    tail = " ".join(missing)
    if missing:
        out.repairs.append(f"{name}:append_required")
    full = _join(head, t, tail)
    if T.ends_a_sentence(t) and _fits(name, full, rules) and not (cut_off and not T.ends_a_sentence(t)):
        return full
    kept = trim_to_sentence(name, head, t, tail, rules)
    if kept is None:
        return full  # nothing whole fits: the checks fail it and it is regenerated
    out.repairs.append(f"{name}:trim_to_sentence")
    return _join(head, kept, tail)
