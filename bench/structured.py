"""What structured outputs cost: grammar compile time (cold and cached) and constrained vs free tokens/s.

Three measurements in one run, on the configured model (SmolLM2-135M by default):

1. the library choice: building the vocabulary index, compiling two schemas (an email with
   length limits, a nested record with an enum and an array) and masking one step, per token of
   a valid answer, for xgrammar and, when installed, outlines-core;
2. the worker's grammar cache: a schema compiled cold, then fetched by its sha256;
3. the generator's ``generate`` over the same 8 prompts free and with a JSON schema per row
   (and a mixed batch: half constrained), tokens/s of each.

    python -m bench.structured            # full run (a few minutes on a 2-core CPU)
    python -m bench.structured --quick    # smoke mode for CI (seconds)
    python -m bench.structured --write    # record the tables in bench/README.md
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

import torch

from bench.readme import write_section
from factory.config import Settings
from factory.models import registry
from factory.provenance.hashing import schema_sha256
from workers.generators.base import GenerationRequest, OutputFormat
from workers.generators.structured import GrammarCache
from workers.generators.transformers_gen import TransformersGenerator
from workers.model_store import materialize

EMAIL = {"type": "object", "additionalProperties": False, "required": ["subject", "preheader", "body"],
         "properties": {"subject": {"type": "string", "maxLength": 60},
                        "preheader": {"type": "string", "maxLength": 90},
                        "body": {"type": "string", "minLength": 20, "maxLength": 600}}}
RECORD = {"type": "object", "required": ["name", "sentiment", "tags", "address"],
          "properties": {"name": {"type": "string", "maxLength": 40},
                         "sentiment": {"enum": ["positive", "negative", "neutral"]},
                         "tags": {"type": "array", "items": {"type": "string", "maxLength": 20}, "maxItems": 4},
                         "address": {"type": "object", "required": ["city", "zip"],
                                     "properties": {"city": {"type": "string"}, "zip": {"type": "integer"}}}}}
ANSWERS = {"email": {"subject": "Autumn sale", "preheader": "20% off hiking gear until Sunday",
                     "body": "Dear Ana, our autumn hiking sale is on: 20% off boots and jackets until Sunday."},
           "record": {"name": "Ana", "sentiment": "positive", "tags": ["a", "bb"],
                      "address": {"city": "Lyon", "zip": 69001}}}
SCHEMAS = {"email": EMAIL, "record": RECORD}
NAMES = ["Ana", "Ben", "Chloé", "Dev", "Emma", "Farid", "Grace", "Hiro"]


def _timed(fn: Any) -> tuple[Any, float]:
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def xgrammar_costs(tokenizer: Any, vocab: int) -> dict[str, float]:
    import xgrammar as xgr

    info, index_s = _timed(lambda: xgr.TokenizerInfo.from_huggingface(tokenizer, vocab_size=vocab))
    compiler = xgr.GrammarCompiler(info, max_threads=2, cache_enabled=False)
    out = {"index_s": index_s}
    logits = torch.zeros(1, vocab)
    for name, schema in SCHEMAS.items():
        grammar, out[f"{name}_compile_s"] = _timed(
            lambda s=schema: compiler.compile_json_schema(json.dumps(s), any_whitespace=False))
        matcher, bitmask = xgr.GrammarMatcher(grammar), xgr.allocate_token_bitmask(1, vocab)
        ids = tokenizer.encode(json.dumps(ANSWERS[name]), add_special_tokens=False)
        start = time.perf_counter()
        for token in ids:
            matcher.fill_next_token_bitmask(bitmask, 0)
            xgr.apply_token_bitmask_inplace(logits, bitmask)
            assert matcher.accept_token(token)
        out[f"{name}_token_s"] = (time.perf_counter() - start) / len(ids)
    return out


def outlines_core_costs(tokenizer: Any, vocab: int) -> dict[str, float] | None:
    try:
        import outlines_core as oc
        import xgrammar as xgr
        from outlines_core.json_schema import build_regex_from_schema
    except ImportError:
        return None

    def index() -> Any:
        tokens: dict[str, list[int]] = {}
        for token, i in tokenizer.get_vocab().items():
            if i != tokenizer.eos_token_id:
                tokens.setdefault(tokenizer.convert_tokens_to_string([token]), []).append(i)
        return oc.Vocabulary(tokenizer.eos_token_id, tokens)

    vocabulary, index_s = _timed(index)
    out = {"index_s": index_s}
    logits, mask = torch.zeros(1, vocab), torch.zeros(1, (vocab + 31) // 32, dtype=torch.int32)
    for name, schema in SCHEMAS.items():
        built, out[f"{name}_compile_s"] = _timed(
            lambda s=schema: oc.Index(build_regex_from_schema(json.dumps(s)), vocabulary))
        guide = oc.Guide(built)
        ids = tokenizer.encode(json.dumps(ANSWERS[name]), add_special_tokens=False)
        start = time.perf_counter()
        for token in ids:
            guide.write_mask_into(mask.data_ptr(), mask.numel(), mask.element_size())
            xgr.apply_token_bitmask_inplace(logits, mask)  # the same masking kernel for both
            guide.advance(token)
        out[f"{name}_token_s"] = (time.perf_counter() - start) / len(ids)
    return out


def requests(batch: int, max_new: int, constrained: int) -> list[GenerationRequest]:
    fmt = OutputFormat(json.dumps(EMAIL), schema_sha256(EMAIL))
    return [GenerationRequest.from_prompt(
        f"Write a short marketing email to {NAMES[i % 8]} about our autumn hiking sale. Answer in JSON with "
        "subject, preheader and body.", seed=100 + i, max_new_tokens=max_new, temperature=0.7, top_p=0.9,
        response_format=fmt if i < constrained else None) for i in range(batch)]


def throughput(gen: TransformersGenerator, reqs: list[GenerationRequest], repeats: int) -> dict[str, float]:
    runs = []
    for _ in range(repeats):
        out, seconds = _timed(lambda: gen.generate(reqs))
        runs.append((seconds, sum(r.completion_tokens for r in out), sum(r.error is None for r in out)))
    seconds = statistics.median(s for s, _, _ in runs)
    tokens = runs[-1][1]
    return {"s": seconds, "tokens": tokens, "tok_s": tokens / seconds, "ok": runs[-1][2]}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="smoke mode: batch 2, 16 tokens, one repeat")
    ap.add_argument("--write", action="store_true", help="record the tables in bench/README.md")
    args = ap.parse_args()
    batch, max_new, repeats = (2, 16, 1) if args.quick else (8, 160, 3)
    settings = Settings()
    spec = registry.resolve(settings.model)
    local = materialize(spec, settings.model_cache_dir)
    dtype = "float32" if args.quick else "bfloat16"
    gen = TransformersGenerator(spec.name, local.path, local.weights_sha256, device=settings.device, dtype=dtype)
    gen.load()
    vocab = int(gen.model.config.vocab_size)

    libs = {"xgrammar": xgrammar_costs(gen.tokenizer, vocab)}
    if not args.quick:
        other = outlines_core_costs(gen.tokenizer, vocab)
        if other is not None:
            libs["outlines-core"] = other
    lib_table = "\n".join(
        ["| library | vocabulary index (s) | compile email (ms) | compile record (ms) | mask+advance per token, "
         "email (ms) | per token, record (ms) |", "|---|---|---|---|---|---|"]
        + [f"| {name} | {c['index_s']:.2f} | {c['email_compile_s'] * 1000:.0f} | {c['record_compile_s'] * 1000:.0f} "
           f"| {c['email_token_s'] * 1000:.2f} | {c['record_token_s'] * 1000:.2f} |" for name, c in libs.items()])

    cache = GrammarCache(gen.tokenizer, vocab, gen.tokenizer.eos_token_id, size=4)
    fmt = OutputFormat(json.dumps(EMAIL), schema_sha256(EMAIL))
    _, cold = _timed(lambda: cache.get(fmt))
    _, cached = _timed(lambda: cache.get(fmt))

    gen.generate(requests(2, 4, 1))  # warm-up (and the generator's grammar compiler)
    rows = {"free": throughput(gen, requests(batch, max_new, 0), repeats),
            "mixed (half constrained)": throughput(gen, requests(batch, max_new, batch // 2), repeats),
            "constrained": throughput(gen, requests(batch, max_new, batch), repeats)}
    free = rows["free"]["tok_s"]
    gen_table = "\n".join(
        [f"| batch of {batch} | completion tokens | seconds | tokens/s | vs free | rows finished |",
         "|---|---|---|---|---|---|"]
        + [f"| {name} | {r['tokens']} | {r['s']:.2f} | {r['tok_s']:.0f} | {r['tok_s'] / free:.2f} "
           f"| {r['ok']}/{batch} |" for name, r in rows.items()])
    table = (lib_table + "\n\n" + f"Worker grammar cache (email schema): cold {cold * 1000:.1f} ms, "
             f"cached {cached * 1e6:.1f} µs.\n\n" + gen_table)
    meta = (f"model {spec.name}, {dtype}, max_new_tokens {max_new}, temperature 0.7, median of {repeats}; "
            f"torch {torch.__version__}, {torch.get_num_threads()} threads, {platform.machine()}")
    print(table)
    print(meta)
    if args.quick:
        assert cached < cold, "the cached grammar was not faster than compiling it"
        assert rows["constrained"]["tokens"] > 0
    if args.write:
        write_section("structured", table, meta)


if __name__ == "__main__":
    main()
