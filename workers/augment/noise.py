"""Character-level noise for robustness sets: keyboard-neighbour typos, transpositions,
dropped and doubled letters, flipped case.

Each letter is edited with probability ``rate``; at least one edit that is not a
case flip always happens (case alone is invisible to an uncased embedding model,
so the filters would reject the row as a copy). Deterministic per seed.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

OPERATIONS = ("keyboard", "transpose", "delete", "duplicate", "case")

_ROWS = ("qwertyuiop", "asdfghjkl", "zxcvbnm")


def _neighbours() -> dict[str, str]:
    """Letters next to each letter on a QWERTY keyboard (same row and the rows above and below)."""
    where = {ch: (r, c) for r, row in enumerate(_ROWS) for c, ch in enumerate(row)}
    out: dict[str, str] = {}
    for ch, (r, c) in where.items():
        near = [other for other, (r2, c2) in where.items()
                if other != ch and abs(r2 - r) <= 1 and abs(c2 - c) <= 1]
        out[ch] = "".join(sorted(near))
    return out


KEYBOARD_NEIGHBOURS = _neighbours()


def _edit(chars: list[str], i: int, op: str, rng: random.Random) -> int:
    """Apply ``op`` at position ``i``; return how many positions to advance."""
    ch = chars[i]
    if op == "keyboard":
        near = KEYBOARD_NEIGHBOURS.get(ch.lower(), "")
        if near:
            sub = rng.choice(near)
            chars[i] = sub.upper() if ch.isupper() else sub
        return 1
    if op == "transpose":
        if i + 1 < len(chars) and chars[i + 1].isalpha() and chars[i + 1] != ch:
            chars[i], chars[i + 1] = chars[i + 1], ch
            return 2
        return 1
    if op == "delete":
        chars[i] = ""
        return 1
    if op == "duplicate":
        chars[i] = ch + ch
        return 1
    chars[i] = ch.swapcase()
    return 1


def augment(text: str, *, rate: float, operations: Sequence[str], seed: int) -> str:
    rng = random.Random(seed)
    chars = list(text)
    letters = [i for i, ch in enumerate(chars) if ch.isalpha()]
    if not letters:
        return text
    typo_ops = [op for op in operations if op != "case"] or ["keyboard"]
    typos = 0
    i = 0
    letter_set = set(letters)
    while i < len(chars):
        if i in letter_set and rng.random() < rate:
            op = rng.choice(list(operations))
            before = chars[i]
            step = _edit(chars, i, op, rng)
            typos += op != "case" and chars[i] != before
            i += step
        else:
            i += 1
    if typos == 0:
        for _attempt in range(20):
            j = rng.choice(letters)
            before = chars[j]
            _edit(chars, j, rng.choice(typo_ops), rng)
            if chars[j] != before:
                break
    return "".join(chars)
