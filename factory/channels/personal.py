"""Does a copy use the recipient's data? The personalization check and its depth figure.

A message can name the recipient fields its copy must use (``personalize_with``). A copy uses a
field when it mentions the value's content words in any word form: "your new trail running shoes"
uses «trail running shoes», "jackets" uses «a rain jacket»'s "jacket". Words are compared by their
Snowball stems in the campaign's language (English when it has no stemmer), after dropping short and
function words; at least half of the value's content words (rounded up) must appear, so «a
lightweight rain jacket» is used by "your rain jacket" but not by "your jacket". Synonyms
("sneakers" for «running shoes») do not count: the copy should name what the recipient bought.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from functools import lru_cache

import snowballstemmer

STEMMERS = {"en": "english", "de": "german", "fr": "french", "es": "spanish", "it": "italian",
            "pt": "portuguese", "nl": "dutch", "sv": "swedish", "da": "danish"}
# Words that say nothing about the value itself (English; other languages drop short words only).
FUNCTION_WORDS = frozenset(
    "a an the and or of for with in on at to from by my your our their his her its this that these those "
    "new some".split())
MIN_WORD_CHARS = 3
_TOKEN = re.compile(r"[^\W_]+")
CHECK = "personalization"  # failures are named personalization:<field>


@lru_cache(maxsize=16)
def _stemmer(language: str | None) -> snowballstemmer.BaseStemmer:
    return snowballstemmer.stemmer(STEMMERS.get(language or "en", "english"))


def _stems(text: str, language: str | None) -> list[str]:
    return list(_stemmer(language).stemWords([t.lower() for t in _TOKEN.findall(text)]))


def content_stems(value: str, language: str | None) -> set[str]:
    """The stems a copy must show for ``value``: its words minus function and short words (numbers stay)."""
    words = [t.lower() for t in _TOKEN.findall(value)]
    kept = [w for w in words if w.isdigit() or (len(w) >= MIN_WORD_CHARS and w not in FUNCTION_WORDS)]
    return set(_stemmer(language).stemWords(kept))


def mentions(text: str, value: str, language: str | None = "en") -> bool:
    """Whether ``text`` uses ``value`` (see the module's docstring). A value with no content word
    (empty, or only function words) asks for nothing and counts as used."""
    wanted = content_stems(value, language)
    if not wanted:
        return True
    found = wanted & set(_stems(text, language))
    return len(found) * 2 >= len(wanted)


def used_fields(copy_text: str, values: Mapping[str, str], language: str | None) -> dict[str, bool]:
    """For each named field, whether the copy uses its value."""
    return {name: mentions(copy_text, str(value), language) for name, value in values.items()}


def failures(copy_text: str, values: Mapping[str, str], language: str | None) -> list[str]:
    """``personalization:<field>`` for each named field the copy does not use."""
    return [f"{CHECK}:{name}" for name, used in used_fields(copy_text, values, language).items() if not used]
