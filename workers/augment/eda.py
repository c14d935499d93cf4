"""Easy Data Augmentation (Wei & Zou, 2019): synonym replacement, random insertion, swap, deletion.

Deterministic: every choice comes from a ``random.Random`` seeded with the item's
seed, so the same job reproduces the same rows. One operation per variant,
rotating with the variant index so a row's k variants use different operations.
``n = max(1, alpha * words)`` words change, as in the paper.

Unlike the reference code the text keeps its case, punctuation and spacing: each
token remembers whether a space preceded it, swaps exchange words but keep the
slots' spacing, and the sentence start is re-capitalised.
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence

from workers.augment.synonyms import STOPWORDS, WordNetSynonyms, default_synonyms

OPERATIONS = ("synonym", "insert", "swap", "delete")
_TOKEN = re.compile(r"(\s*)(\w+(?:['’-]\w+)*|[^\w\s])")


def tokenize(text: str) -> tuple[list[str], list[bool]]:
    """Words and punctuation marks, and whether each one followed whitespace."""
    pairs = _TOKEN.findall(text)
    return [tok for _, tok in pairs], [bool(space) for space, _ in pairs]


def detokenize(tokens: Sequence[str], spaces: Sequence[bool]) -> str:
    return "".join((" " if sp else "") + tok for tok, sp in zip(tokens, spaces, strict=True)).strip()


def _is_word(token: str) -> bool:
    return token[0].isalnum() or token[0] == "_"


def _match_case(template: str, word: str) -> str:
    return word[:1].upper() + word[1:] if template[:1].isupper() and template != "I" else word


def _word_positions(tokens: Sequence[str]) -> list[int]:
    return [i for i, t in enumerate(tokens) if _is_word(t)]


def synonym_replacement(tokens: list[str], n: int, rng: random.Random, lexicon: WordNetSynonyms) -> list[str]:
    out = list(tokens)
    candidates = [i for i in _word_positions(out) if out[i].lower() not in STOPWORDS]
    rng.shuffle(candidates)
    replaced = 0
    for i in candidates:
        options = lexicon.synonyms(out[i])
        if options:
            out[i] = _match_case(out[i], rng.choice(options))
            replaced += 1
            if replaced >= n:
                break
    return out


def random_insertion(tokens: list[str], spaces: list[bool], n: int, rng: random.Random,
                     lexicon: WordNetSynonyms) -> tuple[list[str], list[bool]]:
    out, gaps = list(tokens), list(spaces)
    for _ in range(n):
        words = [out[i] for i in _word_positions(out) if out[i].lower() not in STOPWORDS]
        for _attempt in range(10):
            if not words:
                break
            options = lexicon.synonyms(rng.choice(words))
            if options:
                positions = _word_positions(out)
                # Before any word, or right after the last one (before closing punctuation).
                at = rng.choice([*positions, positions[-1] + 1])
                # Before a word, the new word takes that word's spacing and pushes it along with a
                # space; after the last word it gets a space and the punctuation keeps its own.
                before_word = at <= positions[-1]
                gaps.insert(at, gaps[at] if before_word else True)
                out.insert(at, rng.choice(options))
                if before_word:
                    gaps[at + 1] = True
                break
    return out, gaps


def random_swap(tokens: list[str], n: int, rng: random.Random) -> list[str]:
    out = list(tokens)
    positions = _word_positions(out)
    if len(positions) < 2:
        return out
    for _ in range(n):
        a, b = rng.sample(positions, 2)
        out[a], out[b] = out[b], out[a]
    return out


def random_deletion(tokens: list[str], spaces: list[bool], p: float,
                    rng: random.Random) -> tuple[list[str], list[bool]]:
    """Drop each word with probability ``p``; at least one word goes and at least one stays."""
    positions = _word_positions(tokens)
    if len(positions) < 2:
        return list(tokens), list(spaces)
    drop = {i for i in positions if rng.random() < p}
    if not drop:
        drop = {rng.choice(positions)}
    if len(drop) == len(positions):
        drop.discard(rng.choice(positions))
    keep = [i for i in range(len(tokens)) if i not in drop]
    # A word that follows a dropped one takes the dropped one's leading space.
    gaps = [spaces[i] or (i - 1 in drop and _is_word(tokens[i])) for i in keep]
    return [tokens[i] for i in keep], gaps


def _sentence_case(original: Sequence[str], edited: list[str]) -> list[str]:
    """Keep a capitalised sentence start capitalised when the first word changed."""
    first_before = next((t for t in original if _is_word(t)), "")
    positions = _word_positions(edited)
    if not positions or not first_before[:1].isupper() or edited[positions[0]] == first_before:
        return edited
    out = list(edited)
    for i in positions[1:]:
        if out[i] == first_before and first_before != "I" and not first_before.isupper():
            out[i] = first_before[:1].lower() + first_before[1:]
    out[positions[0]] = out[positions[0]][:1].upper() + out[positions[0]][1:]
    return out


def pick_operation(operations: Sequence[str], variant: int, seed: int) -> str:
    """Rotate through the operations by variant, from a per-row offset, so k variants differ."""
    return operations[(seed + variant) % len(operations)]


def augment(text: str, *, operation: str, alpha: float, seed: int,
            lexicon: WordNetSynonyms | None = None) -> str:
    """One EDA variant of ``text``."""
    rng = random.Random(seed)
    tokens, spaces = tokenize(text)
    words = len(_word_positions(tokens))
    n = max(1, int(alpha * words))
    lex = lexicon or default_synonyms()
    if operation == "synonym":
        edited, gaps = synonym_replacement(tokens, n, rng, lex), spaces
    elif operation == "insert":
        edited, gaps = random_insertion(tokens, spaces, n, rng, lex)
    elif operation == "swap":
        edited, gaps = random_swap(tokens, n, rng), spaces
    elif operation == "delete":
        edited, gaps = random_deletion(tokens, spaces, alpha, rng)
    else:
        raise ValueError(f"unknown EDA operation {operation!r}")
    return detokenize(_sentence_case(tokens, edited), gaps)
