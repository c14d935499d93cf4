"""``FACTORY_TORCH_DTYPE=auto``: the dtype that generates fastest here, measured once per machine.

Which dtype is fastest depends on the machine, the library versions and the work, not on
a rule: on one 2-core CPU an earlier benchmark found bfloat16 slower than float32, while
today, through the worker's own generator at batch 8, it generates 1.8x faster (86 vs 48
tokens/s). So the worker measures the work
it really does — one chunk of ``chunk_size`` requests through its own generator, default
sampling parameters, a few dozen new tokens — in each candidate dtype, and keeps the
fastest. The verdict is cached next to the converted model, keyed by the weights, the
device, the torch version, the thread count and the chunk size, so only the first start
on a machine pays for it (seconds on a small model).
"""

from __future__ import annotations

import json
import logging
import os
import statistics
import time
from pathlib import Path
from typing import Any

import torch

log = logging.getLogger(__name__)

CANDIDATES = {"cpu": ("float32", "bfloat16"), "cuda": ("bfloat16", "float16")}
PROBE_NEW_TOKENS = 24
PROBE_RUNS = 3
PROBE_PROMPTS = ("Write one friendly sentence inviting {name} to our spring sale.",
                 "Suggest a short subject line for a newsletter about hiking boots, for {name}.")
NAMES = ("Ana", "Ben", "Chloé", "Dev", "Eun-ji", "Farid", "Greta", "Hugo")
CACHE_FILE = "dtype-choice.json"


def cache_key(weights_sha256: str, device: torch.device, batch: int) -> str:
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu x{torch.get_num_threads()}"
    return f"{weights_sha256[:16]}|{where}|torch {torch.__version__}|batch {batch}"


def choose(model_dir: Path, weights_sha256: str, device: torch.device, batch: int,
           cache_dir: Path) -> tuple[torch.dtype, dict[str, Any]]:
    """The fastest candidate dtype for ``batch``-row chunks on ``device``: (dtype, the measurement)."""
    path = cache_dir / CACHE_FILE
    key = cache_key(weights_sha256, device, batch)
    known = _read(path)
    if key in known:
        return getattr(torch, known[key]["dtype"]), known[key]
    tokens_per_s = {name: measure(model_dir, device, getattr(torch, name), batch)
                    for name in CANDIDATES.get(device.type, ("float32",))}
    best = max(tokens_per_s, key=lambda name: tokens_per_s[name])
    verdict = {"dtype": best, "tokens_per_s": {k: round(v, 1) for k, v in tokens_per_s.items()},
               "batch": batch, "new_tokens": PROBE_NEW_TOKENS}
    log.info("dtype for %s: %s (tokens/s at batch %d: %s)", key, best, batch, verdict["tokens_per_s"])
    _write(path, {**_read(path), key: verdict})
    return getattr(torch, best), verdict


def measure(model_dir: Path, device: torch.device, dtype: torch.dtype, batch: int) -> float:
    """Generated tokens per second of one chunk of ``batch`` requests through the worker's own generator
    (its default sampling parameters, seeded per row): the median of a few runs."""
    from workers.generators.base import GenerationRequest
    from workers.generators.transformers_gen import TransformersGenerator

    generator = TransformersGenerator("probe", model_dir, "0" * 64, device=str(device),
                                      dtype=str(dtype).removeprefix("torch."))
    generator.load()
    requests = [GenerationRequest.from_prompt(PROBE_PROMPTS[i % len(PROBE_PROMPTS)].format(name=NAMES[i % len(NAMES)]),
                                              seed=i, max_new_tokens=PROBE_NEW_TOKENS) for i in range(batch)]
    generator.generate(requests[:1])  # warm-up
    seconds, tokens = [], []
    for _ in range(PROBE_RUNS):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        started = time.perf_counter()
        results = generator.generate(requests)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        seconds.append(time.perf_counter() - started)
        tokens.append(sum(r.completion_tokens for r in results))
    generator.unload()
    return statistics.median(tokens) / statistics.median(seconds)


def _read(path: Path) -> dict[str, Any]:
    try:
        data: dict[str, Any] = json.loads(path.read_text())
        return data
    except (OSError, ValueError):
        return {}


def _write(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=True))
    tmp.replace(path)  # atomic: two workers starting together each write a whole file
