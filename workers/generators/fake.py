"""A fast, deterministic stand-in generator for tests of the queue and the data path.

Never the default. Markers in a prompt inject faults, for the fault-injection tests:
``POISON`` raises (a bad item the generator crashes on), ``STALL`` hangs (a chunk
that never finishes on its own), ``CRASH`` kills the whole process (a bad item that
takes its worker down). ``delay_s`` makes every batch take time, so kills land mid-chunk.
A prefilled request (campaign copy) gets a short sentence of copy instead of an echo
of its prompt; a structured request gets a JSON document following its schema (strings
are such a sentence, cut to ``maxLength``).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
from collections.abc import Sequence
from typing import Any

from workers.generators.base import GenerationRequest, GenerationResult, GeneratorInfo

STALL_S = 3600.0
MENTION = re.compile(r"Mention «[^\n]*»\.$")
DATA = re.compile(r"«([^«»]*)»")
LETTERS = str.maketrans("0123456789", "ghijklmnop")
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
    def _copy(tag: str, mention: str | None = None) -> str:
        """A continuation of a prefilled answer (campaign copy): a short sentence that passes the
        checks, except for about one in five seeds, which leave a placeholder behind, so tests
        see the check-and-regenerate path without a model. Asked to mention customer details, it
        does for about half of the seeds (the personalization check sees both outcomes)."""
        ref = tag.translate(LETTERS)  # no digits: a number the brief lacks is an invented fact
        if int(tag[0], 16) < 3:
            return f"Fresh autumn deals on [Product] are here, ref {ref}."
        if mention and int(tag[1], 16) < 8:
            return f"Fresh autumn deals for {mention} are here, ref {ref}."
        return f"Fresh autumn deals on outdoor gear are here, ref {ref}."

    @classmethod
    def _document(cls, schema: dict[str, Any], tag: str) -> Any:
        """A value following ``schema`` (the keywords the API accepts, simply)."""
        if "const" in schema:
            return schema["const"]
        if "enum" in schema:
            return schema["enum"][int(tag[0], 16) % len(schema["enum"])]
        kind = schema.get("type", "object")
        if isinstance(kind, list):
            kind = next((k for k in kind if k != "null"), "null")
        if kind == "object":
            return {name: cls._document(sub, tag) for name, sub in (schema.get("properties") or {}).items()}
        if kind == "array":
            return [cls._document(schema.get("items") or {}, tag)] * max(1, schema.get("minItems", 1))
        if kind in ("integer", "number"):
            return max(schema.get("minimum", 0), min(schema.get("maximum", 7), 7))
        if kind == "boolean":
            return True
        if kind == "null":
            return None
        return cls._copy(tag)[:schema.get("maxLength", 200)]

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
            if req.response_format is not None:
                schema = json.loads(req.response_format.schema_json or '{"type": "object"}')
                text = json.dumps(self._document(schema, tag), separators=(",", ":"))
            else:
                text = self._copy(tag, _mentioned(req)) if req.prefill is not None \
                    else f"[{tag}] {req.prompt[:60]}"
            out.append(GenerationResult(text=text, prompt_tokens=len(req.prompt.split()),
                                        completion_tokens=len(text.split()), finish_reason="stop"))
        return out


def _mentioned(req: GenerationRequest) -> str | None:
    """The values a copy request asks to mention ("Mention «a» and «b»."), joined: None if none."""
    found = MENTION.search(req.messages[-1].get("content", "")) if req.messages else None
    return " and ".join(DATA.findall(found.group(0))) if found else None
