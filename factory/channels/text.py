"""Text measurements the checks use: merge tags, sentences, language, reading grade, emoji.

Language identification is py3langid (the langid.py model, shipped inside the
package: nothing is downloaded); syllables for the Flesch-Kincaid grade come from
pyphen's hyphenation dictionaries; emoji from the ``emoji`` package's Unicode data.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from functools import lru_cache
from typing import Any

import emoji

MERGE_TAG = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]{0,63})\s*\}\}")
SENTENCE_END = re.compile(r"[.!?…][\"'”’)\]]*")
_SENTENCE_SPLIT = re.compile(r"(?<=[.!?…])[\"'”’)\]]*\s+")
_WORD = re.compile(r"[^\W\d_][\w'’-]*")


def normalise_merge_tags(text: str) -> str:
    """``{{ first_name }}`` and ``{{first_name}}`` are the same tag; store one spelling."""
    return MERGE_TAG.sub(lambda m: "{{" + m.group(1) + "}}", text)


def fill_merge_tags(text: str, values: Mapping[str, Any], only: frozenset[str] | None = None) -> str:
    """Replace known tags with their values; unknown tags stay (and fail the placeholder check)."""
    def sub(m: re.Match[str]) -> str:
        name = m.group(1)
        if name in values and (only is None or name in only):
            return str(values[name])
        return m.group(0)

    return MERGE_TAG.sub(sub, text)


def words(text: str) -> list[str]:
    return _WORD.findall(text)


def sentences(text: str) -> list[str]:
    return [s for s in _SENTENCE_SPLIT.split(text.strip()) if s]


def ends_a_sentence(text: str) -> bool:
    """True when the text ends with terminal punctuation (closing quotes and emoji may follow)."""
    core = emoji.replace_emoji(text, "").rstrip()
    return bool(core) and bool(re.search(SENTENCE_END.pattern + r"$", core))


def has_emoji(text: str) -> bool:
    return emoji.emoji_count(text) > 0


def strip_emoji(text: str) -> str:
    text = re.sub(r"[ \t]{2,}", " ", emoji.replace_emoji(text, ""))
    return re.sub(r"[ \t]+([.,!?;:])", r"\1", text).strip()


@lru_cache(maxsize=1)
def _identifier() -> Any:
    from py3langid.langid import MODEL_FILE, LanguageIdentifier

    return LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)


def detect_language(text: str) -> str:
    """ISO 639-1 code of the most likely language."""
    lang, _prob = _identifier().classify(text)
    return str(lang)


@lru_cache(maxsize=4)
def _hyphenator(lang: str) -> Any:
    import pyphen

    return pyphen.Pyphen(lang=lang if lang in pyphen.LANGUAGES else "en_US")


def syllables(word: str, lang: str = "en_US") -> int:
    return max(1, len(_hyphenator(lang).positions(word.lower())) + 1)


def reading_grade(text: str, lang: str = "en_US") -> float:
    """Flesch-Kincaid grade level: 0.39 words/sentence + 11.8 syllables/word - 15.59."""
    ws = words(text)
    if not ws:
        return 0.0
    n_sentences = max(1, len(sentences(text)))
    n_syllables = sum(syllables(w, lang) for w in ws)
    return round(0.39 * len(ws) / n_sentences + 11.8 * n_syllables / len(ws) - 15.59, 1)
