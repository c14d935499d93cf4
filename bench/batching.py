"""Batched generation vs one call per item, side by side in one run.

Measures what the worker does with a chunk: the generator's ``generate`` over 8
requests in one batched call, against 8 calls of one request each, with the same
prompts, seeds and parameters; and the same for float32 vs bfloat16 on this
device. Prints a table and, with ``--write``, records it in bench/README.md.

    python -m bench.batching            # full run (a few minutes on a 2-core CPU)
    python -m bench.batching --quick    # smoke mode for CI (seconds)
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

import torch

from bench.readme import write_section
from factory.config import Settings
from factory.models import registry
from workers.generators.base import GenerationRequest
from workers.generators.transformers_gen import TransformersGenerator
from workers.model_store import materialize

NAMES = ["Ana", "Ben", "Chloé", "Dev", "Emma", "Farid", "Grace", "Hiro"]
CITIES = ["Lisbon", "Denver", "Lyon", "Pune", "Oslo", "Calgary", "Wellington", "Sapporo"]


def requests(n: int, max_new_tokens: int) -> list[GenerationRequest]:
    return [
        GenerationRequest.from_prompt(
            f"Write a short, friendly marketing email to {NAMES[i % 8]} in {CITIES[i % 8]} "
            f"about our autumn hiking sale (20% off until Sunday).",
            seed=1000 + i, max_new_tokens=max_new_tokens, temperature=0.7, top_p=0.9, repetition_penalty=1.1,
        )
        for i in range(n)
    ]


def measure(gen: TransformersGenerator, batch: int, max_new_tokens: int, repeats: int) -> dict[str, float]:
    reqs = requests(batch, max_new_tokens)
    gen.generate(reqs[:2])  # warm-up: first call pays one-off costs
    batched, single = [], []
    tokens_batched = tokens_single = 0
    for _ in range(repeats):
        start = time.perf_counter()
        out = gen.generate(reqs)
        batched.append(time.perf_counter() - start)
        tokens_batched = sum(r.completion_tokens for r in out)
        start = time.perf_counter()
        outs = [gen.generate([r])[0] for r in reqs]
        single.append(time.perf_counter() - start)
        tokens_single = sum(r.completion_tokens for r in outs)
    b, s = statistics.median(batched), statistics.median(single)
    return {"batched_s": b, "single_s": s, "speedup": s / b, "tokens_batched": tokens_batched,
            "tokens_single": tokens_single, "batched_tok_s": tokens_batched / b, "single_tok_s": tokens_single / s}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="smoke mode: tiny outputs, one repeat")
    ap.add_argument("--write", action="store_true", help="record the table in bench/README.md")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--max-new-tokens", type=int, default=96, help="the job API's default")
    args = ap.parse_args()
    max_new, repeats = (8, 1) if args.quick else (args.max_new_tokens, 3)
    settings = Settings()
    spec = registry.resolve(settings.model)
    local = materialize(spec, settings.model_cache_dir)
    rows = []
    dtypes = ["float32"] if args.quick else ["float32", "bfloat16"]
    for dtype in dtypes:
        gen = TransformersGenerator(spec.name, local.path, local.weights_sha256, device=settings.device, dtype=dtype)
        gen.load()
        r = measure(gen, args.batch, max_new, repeats)
        rows.append((gen.info.device, dtype, r))
        gen.unload()
    header = (f"| device | dtype | chunk of {args.batch}, one batched call (s) | {args.batch} one-item calls (s) "
              f"| speedup | tokens/s batched | tokens/s single |\n|---|---|---|---|---|---|---|")
    lines = [header] + [
        f"| {dev} | {dt} | {r['batched_s']:.2f} | {r['single_s']:.2f} | **{r['speedup']:.1f}x** "
        f"| {r['batched_tok_s']:.0f} | {r['single_tok_s']:.0f} |" for dev, dt, r in rows
    ]
    table = "\n".join(lines)
    meta = (f"model {spec.name}, max_new_tokens {max_new}, temperature 0.7, median of {repeats}; "
            f"torch {torch.__version__}, {torch.get_num_threads()} threads, {platform.machine()}")
    print(table)
    print(meta)
    if args.quick:
        assert all(r["speedup"] > 1.0 for _, _, r in rows), "batched generation was not faster"
    if args.write:
        write_section("batching", table, meta)


if __name__ == "__main__":
    main()
