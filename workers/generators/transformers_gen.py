"""The transformers generator: chat template, left padding, one batched ``generate`` per call.

Seeds are per item, not per batch: a logits processor samples each row with its
own ``torch.Generator`` (temperature + top-p), then greedy decoding takes the
sampled token. So an item's text depends on its own seed, not on which other
items share its batch, and a seeded run reproduces exactly on the same machine.
"""

from __future__ import annotations

import logging
import platform
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import transformers
from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig, LogitsProcessor, LogitsProcessorList

from workers.generators import dtype_choice, structured
from workers.generators.base import (
    GenerationRequest,
    GenerationResult,
    GeneratorInfo,
    PromptTooLong,
    is_out_of_memory,
)

log = logging.getLogger(__name__)


class PerRowSeededSampler(LogitsProcessor):
    """Sample each row from its own seeded RNG; return logits that make greedy pick that token."""

    def __init__(self, seeds: Sequence[int], temperature: float, top_p: float) -> None:
        self.rngs = [torch.Generator(device="cpu").manual_seed(int(s)) for s in seeds]
        self.temperature = temperature
        self.top_p = top_p

    # Top-p is computed over the best CANDIDATES tokens; a row whose top_p mass is not
    # reached within them falls back to the full sort, so the result is exact either way.
    CANDIDATES = 256

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        logits = scores.float() / self.temperature
        k = min(self.CANDIDATES, logits.shape[-1])
        top_logits, top_idx = torch.topk(logits, k, dim=-1)  # sorted, descending
        log_z = torch.logsumexp(logits, dim=-1, keepdim=True)
        probs = (top_logits - log_z).exp()  # true probabilities of the candidates
        picks = []
        for row in range(logits.shape[0]):
            p, idx = probs[row], top_idx[row]
            if self.top_p < 1.0 and float(p.sum()) >= self.top_p:
                keep = (p.cumsum(0) - p) < self.top_p  # the first always stays
                p, idx = p[keep], idx[keep]
            else:
                p, idx = self._full_row(logits[row])
            choice = torch.multinomial((p / p.sum()).cpu(), 1, generator=self.rngs[row])
            picks.append(idx[choice.to(idx.device)])
        chosen = torch.stack(picks)
        out = torch.full_like(scores, float("-inf"))
        out.scatter_(1, chosen, 0.0)
        return out  # type: ignore[return-value]

    def _full_row(self, logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        sorted_logits, sorted_idx = torch.sort(logits, descending=True)
        p = sorted_logits.softmax(dim=-1)
        if self.top_p < 1.0:
            keep = (p.cumsum(0) - p) < self.top_p
            return p[keep], sorted_idx[keep]
        return p, sorted_idx


def _cut_at_stop(text: str, stops: Sequence[str], finish: str) -> tuple[str, str]:
    """Text up to the first stop string (excluded), as the OpenAI API returns it."""
    cut = min((i for i in (text.find(s) for s in stops) if i >= 0), default=-1)
    if cut >= 0:
        return text[:cut].strip(), "stop"
    return text.strip(), finish


def pick_device(requested: str) -> torch.device:
    if requested != "auto":
        return torch.device(requested)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def pick_dtype(requested: str, device: torch.device, model_dir: Path, weights_sha256: str, batch: int,
               cache_dir: Path | None) -> torch.dtype:
    """The dtype asked for; ``auto``: the fastest for ``batch``-row chunks here, measured once
    (``dtype_choice``; without a cache directory: bfloat16 on CUDA, float32 on CPU)."""
    if requested != "auto":
        return getattr(torch, requested)  # type: ignore[no-any-return]
    if cache_dir is None:
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    return dtype_choice.choose(model_dir, weights_sha256, device, batch, cache_dir)[0]


class TransformersGenerator:
    def __init__(self, model_name: str, model_dir: Path, weights_sha256: str,
                 device: str = "auto", dtype: str = "auto", batch: int = 8, cache_dir: Path | None = None,
                 grammar_cache_size: int = 64) -> None:
        self.model_dir = model_dir
        self.grammar_cache_size = grammar_cache_size
        self.grammars: structured.GrammarCache | None = None
        self.device = pick_device(device)
        self.dtype = pick_dtype(dtype, self.device, model_dir, weights_sha256, batch, cache_dir)
        self.info = GeneratorInfo(
            name="transformers", model=model_name, weights_sha256=weights_sha256,
            device=self._device_label(), dtype=str(self.dtype).removeprefix("torch."),
            libraries={"torch": torch.__version__, "transformers": transformers.__version__,
                       "python": platform.python_version()},
        )
        self.model: Any = None
        self.tokenizer: Any = None

    def _device_label(self) -> str:
        if self.device.type == "cuda":
            return f"cuda:{torch.cuda.get_device_name(self.device)}"
        return f"cpu:{platform.machine()}"

    def load(self) -> None:
        if self.model is not None:
            return
        self.tokenizer = AutoTokenizer.from_pretrained(self.model_dir)
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        # transformers' stubs type ``.to`` through a decorator that mypy reads as taking the model itself.
        self.model = AutoModelForCausalLM.from_pretrained(self.model_dir, dtype=self.dtype).to(
            self.device)  # type: ignore[arg-type]
        self.model.eval()

    def unload(self) -> None:
        self.model = None
        self.tokenizer = None
        self.grammars = None
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    def generate(self, batch: Sequence[GenerationRequest]) -> list[GenerationResult]:
        """Group by sampling parameters; one batched call per group; results in input order."""
        self.load()
        results: list[GenerationResult | None] = [None] * len(batch)
        groups: dict[tuple[Any, ...], list[int]] = {}
        for i, req in enumerate(batch):
            groups.setdefault(req.sampling_key(), []).append(i)
        for indices in groups.values():
            try:
                group = self._generate_group([batch[i] for i in indices])
            except Exception as exc:
                if is_out_of_memory(exc) and self.device.type == "cuda":
                    torch.cuda.empty_cache()  # give the caller's smaller retry the memory back
                raise
            for i, res in zip(indices, group, strict=True):
                results[i] = res
        return [r for r in results if r is not None]

    @torch.inference_mode()
    def _generate_group(self, batch: Sequence[GenerationRequest]) -> list[GenerationResult]:
        first = batch[0]
        # A group is all-prefilled or none (sampling_key says so): the chat template either
        # opens a fresh assistant turn or continues the given one.
        prefilled = first.prefill is not None
        conversations = [
            [*r.messages, {"role": "assistant", "content": r.prefill}] if prefilled else list(r.messages)
            for r in batch
        ]
        enc = self.tokenizer.apply_chat_template(
            conversations, add_generation_prompt=not prefilled, continue_final_message=prefilled,
            padding=True, return_tensors="pt", return_dict=True,
        ).to(self.device)
        context = int(getattr(self.model.config, "max_position_embeddings", 0) or 0)
        longest = int(enc["attention_mask"].sum(dim=1).max())
        if context and longest + first.max_new_tokens > context:
            raise PromptTooLong(f"the prompt is {longest} tokens; with max_new_tokens {first.max_new_tokens} it "
                                f"exceeds the model's context of {context} tokens")
        eos = self.tokenizer.eos_token_id
        config = GenerationConfig(
            do_sample=False, max_new_tokens=first.max_new_tokens,
            repetition_penalty=first.repetition_penalty, pad_token_id=self.tokenizer.pad_token_id,
            eos_token_id=eos, stop_strings=list(first.stop) or None,
        )
        processors = LogitsProcessorList()
        masker: structured.GrammarMasker | None = None
        compile_errors: dict[int, str] = {}
        if any(r.response_format is not None for r in batch):  # before sampling: the sampler sees allowed tokens
            masker, compile_errors = self._grammar_cache().masker(batch)
            if masker is not None:
                processors.append(masker)
        if first.temperature > 0:
            processors.append(PerRowSeededSampler([r.seed for r in batch], first.temperature, first.top_p))
        # Stop strings live in the config (passing them beside it is deprecated); matching them
        # needs the tokenizer.
        extra: dict[str, Any] = {"tokenizer": self.tokenizer} if first.stop else {}
        out = self.model.generate(**enc, generation_config=config, logits_processor=processors, **extra)
        prompt_len = enc["input_ids"].shape[1]
        new_tokens = out[:, prompt_len:].cpu()
        prompt_counts = enc["attention_mask"].sum(dim=1).tolist()
        results = []
        for row, tokens in enumerate(new_tokens.tolist()):
            finish, counted = "length", len(tokens)
            if eos in tokens:
                tokens = tokens[: tokens.index(eos)]
                finish, counted = "stop", len(tokens) + 1  # the end-of-sequence token was generated too
            text = self.tokenizer.decode(tokens, skip_special_tokens=True)
            text, finish = _cut_at_stop(text, first.stop, finish)
            result = GenerationResult(text=text, prompt_tokens=int(prompt_counts[row]), completion_tokens=counted,
                                      finish_reason=finish)
            results.append(structured.check(batch[row], result, masker, row, compile_errors.get(row), eos))
        return results

    def _grammar_cache(self) -> structured.GrammarCache:
        if self.grammars is None:
            self.grammars = structured.GrammarCache(self.tokenizer, int(self.model.config.vocab_size),
                                                    self.tokenizer.eos_token_id, self.grammar_cache_size)
        return self.grammars
