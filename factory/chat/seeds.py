"""Seeds for chat choices: the same request with the same ``seed`` gives the same texts,
whether it is sent to POST /v1/chat/completions or as a line of a batch."""

from __future__ import annotations

from factory.provenance.hashing import derive_seed


def choice_seeds(seed: int | None, fallback_seed: int, custom_id: str, n: int) -> list[int]:
    """Choice 0 uses ``seed`` itself, choice i > 0 a seed derived from it.

    Without a seed, choices derive from the batch's random seed and the line's custom_id,
    so they differ between lines and between batches.
    """
    if seed is None:
        return [derive_seed(fallback_seed, custom_id, i) for i in range(n)]
    return [seed if i == 0 else derive_seed(seed, "choice", i) for i in range(n)]
