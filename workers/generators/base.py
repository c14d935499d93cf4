"""The generator protocol: load() once, generate(batch) many times, unload().

A generator turns a batch of requests into texts. The worker loads one per process
and reuses it for every chunk; implementations are plugins (transformers, fake).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

Message = dict[str, str]  # {"role": "system" | "user" | "assistant", "content": "..."}


@dataclass(frozen=True)
class OutputFormat:
    """A structured output: the text must be JSON following ``schema_json`` (any JSON object when None).

    ``key`` names the grammar in the worker's cache: the schema's sha256 (``json_object`` for any object).
    """

    schema_json: str | None
    key: str


@dataclass(frozen=True)
class GenerationRequest:
    messages: tuple[Message, ...]
    seed: int
    max_new_tokens: int = 96
    temperature: float = 0.7
    top_p: float = 0.95
    repetition_penalty: float = 1.1
    stop: tuple[str, ...] = ()
    # The start of the assistant's answer, written for the model (e.g. "Subject:"): the
    # model continues it instead of starting fresh, which steers small models into a
    # format far more reliably than instructions alone. Results hold the continuation only.
    prefill: str | None = None
    # Structured output: decoding is constrained per row, so rows with and without one share a call.
    response_format: OutputFormat | None = None

    @classmethod
    def from_prompt(cls, prompt: str, seed: int, system_prompt: str | None = None, **params: Any) -> GenerationRequest:
        msgs: list[Message] = [{"role": "system", "content": system_prompt}] if system_prompt else []
        msgs.append({"role": "user", "content": prompt})
        return cls(messages=tuple(msgs), seed=seed, **params)

    @property
    def prompt(self) -> str:
        """The last user message (what simple generators look at)."""
        return next((m["content"] for m in reversed(self.messages) if m["role"] == "user"), "")

    def sampling_key(self) -> tuple[Any, ...]:
        """Requests with the same key can share one batched call."""
        return (self.max_new_tokens, self.temperature, self.top_p, self.repetition_penalty, self.stop,
                self.prefill is not None)


@dataclass(frozen=True)
class GenerationResult:
    text: str  # what the model wrote (after the prefill, when there is one)
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str  # "stop" (end of sequence) or "length" (hit max_new_tokens)
    # Set when the text is not a result: a structured output cut off by max_new_tokens or not valid JSON
    # ("code: message"); the item fails with it.
    error: str | None = None


@dataclass
class GeneratorInfo:
    """What provenance records about the generator that made a text."""

    name: str
    model: str
    weights_sha256: str
    device: str
    dtype: str
    libraries: dict[str, str] = field(default_factory=dict)


class PromptTooLong(ValueError):
    """A request whose prompt and ``max_new_tokens`` together exceed the model's context.

    Raised for the whole batched call; ``generate_isolating`` splits the batch until the
    request is alone, and it fails with this message while the rest of its chunk goes on.
    """


def is_out_of_memory(exc: BaseException) -> bool:
    """The batch did not fit: ``torch.cuda.OutOfMemoryError``, a CUDA or CPU allocator
    ``RuntimeError`` saying so, or Python's ``MemoryError``. Told apart by name and
    message so this module needs no torch."""
    if isinstance(exc, MemoryError) or type(exc).__name__ == "OutOfMemoryError":
        return True
    message = str(exc).lower()
    return isinstance(exc, RuntimeError) and ("out of memory" in message or "can't allocate memory" in message)


class Generator(Protocol):
    info: GeneratorInfo

    def load(self) -> None: ...
    def generate(self, batch: Sequence[GenerationRequest]) -> list[GenerationResult]: ...
    def unload(self) -> None: ...
