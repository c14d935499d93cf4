"""A fast, deterministic stand-in generator for tests of the queue and the data path.

Never the default. Markers in a prompt inject faults, for the fault-injection tests:
``POISON`` raises (a bad item the generator crashes on), ``STALL`` hangs (a chunk
that never finishes on its own), ``CRASH`` kills the whole process (a bad item that
takes its worker down). ``delay_s`` makes every batch take time, so kills land mid-chunk.
A prefilled request (campaign copy) gets a short sentence of copy instead of an echo
of its prompt.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Sequence

from workers.generators.base import GenerationRequest, GenerationResult, GeneratorInfo

STALL_S = 3600.0
CRASH_EXIT_CODE = 70


class PoisonedPrompt(RuntimeError):
    pass


class FakeGenerator:
    def __init__(self, model: str, delay_s: float = 0.0) -> None:
        self.delay_s = delay_s
        self.info = GeneratorInfo(name="fake", model=model, weights_sha256="0" * 64, device="cpu",
                                  dtype="none", libraries={})
        self.calls = 0

    def load(self) -> None:
        pass

    def unload(self) -> None:
        pass

    @staticmethod
    def _copy(tag: str) -> str:
        """A continuation of a prefilled answer (campaign copy): a short sentence that passes the
        checks, except for about one in five seeds, which leave a placeholder behind, so tests
        see the check-and-regenerate path without a model."""
        if int(tag[0], 16) < 3:
            return f"Fresh autumn deals on [Product] are here, ref {tag}."
        return f"Fresh autumn deals on outdoor gear are here, ref {tag}."

    def generate(self, batch: Sequence[GenerationRequest]) -> list[GenerationResult]:
        self.calls += 1
        if self.delay_s:
            time.sleep(self.delay_s)
        out = []
        for req in batch:
            if "POISON" in req.prompt:
                raise PoisonedPrompt("generator crashed on this prompt")
            if "STALL" in req.prompt:
                time.sleep(STALL_S)  # interrupted by the task's soft time limit
            if "CRASH" in req.prompt:
                os._exit(CRASH_EXIT_CODE)
            tag = hashlib.sha256(f"{req.seed}:{req.messages}:{req.prefill}".encode()).hexdigest()[:8]
            text = self._copy(tag) if req.prefill is not None else f"[{tag}] {req.prompt[:60]}"
            out.append(GenerationResult(text=text, prompt_tokens=len(req.prompt.split()),
                                        completion_tokens=len(text.split()), finish_reason="stop"))
        return out
