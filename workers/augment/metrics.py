"""Diversity of a set of texts: distinct-n and mean pairwise cosine similarity.

distinct-n (Li et al., 2016) is the share of n-grams that are unique across the
whole set: higher is more varied wording. Mean pairwise cosine over L2-normalised
sentence embeddings is computed exactly in O(n·d) from the sum vector
(``(|Σv|² − n) / (n(n − 1))``): lower is more varied meaning.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

_WORD = re.compile(r"\w+(?:['’]\w+)*")


def words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def distinct_n(texts: Iterable[str], n: int) -> float | None:
    grams: Counter[tuple[str, ...]] = Counter()
    for text in texts:
        toks = words(text)
        grams.update(tuple(toks[i:i + n]) for i in range(len(toks) - n + 1))
    total = sum(grams.values())
    return None if total == 0 else round(len(grams) / total, 4)


def mean_pairwise_cosine(emb: np.ndarray) -> float | None:
    n = len(emb)
    if n < 2:
        return None
    total = emb.astype(np.float64).sum(axis=0)
    self_sims = float(np.einsum("ij,ij->", emb, emb, dtype=np.float64))
    return round((float(total @ total) - self_sims) / (n * (n - 1)), 4)


def diversity(texts: Sequence[str], emb: np.ndarray) -> dict[str, Any]:
    return {"rows": len(texts), "distinct_1": distinct_n(texts, 1), "distinct_2": distinct_n(texts, 2),
            "mean_pairwise_cosine": mean_pairwise_cosine(emb)}
