"""The Chat Completions request body (the subset we run) and the response shapes.

Strict like every body here: a field we do not support is refused by name rather than
silently ignored, except a few that change nothing about generation (``user``,
``store``, ``metadata``).
"""

from __future__ import annotations

import hashlib
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictStr
from pydantic_core import to_json

# The same bounds as a personalization job's GenerationParams.
MAX_TOKENS = 1024
DEFAULT_MAX_TOKENS = 96


class TextPart(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    type: Literal["text"]
    text: StrictStr


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    role: Literal["system", "developer", "user", "assistant"]
    content: StrictStr | Annotated[list[TextPart], Field(min_length=1)]
    name: Annotated[str, Field(max_length=64)] | None = None

    def as_generation_message(self) -> dict[str, str]:
        """{"role", "content"} with text parts joined; "developer" is the newer name of "system"."""
        text = self.content if isinstance(self.content, str) else "".join(p.text for p in self.content)
        return {"role": "system" if self.role == "developer" else self.role, "content": text}


StopString = Annotated[StrictStr, Field(min_length=1, max_length=64)]


class ChatCompletionRequest(BaseModel):
    # Constraints only, no Python validators: a 50,000-line batch validates every line with this.
    model_config = ConfigDict(extra="forbid", strict=True)

    model: Annotated[str, Field(min_length=1, max_length=128)]
    messages: Annotated[list[ChatMessage], Field(min_length=1, max_length=256)]
    max_tokens: int | None = Field(default=None, ge=1, le=MAX_TOKENS)
    max_completion_tokens: int | None = Field(default=None, ge=1, le=MAX_TOKENS)
    temperature: float | None = Field(default=None, ge=0.0, le=2.0, allow_inf_nan=False)
    top_p: float | None = Field(default=None, gt=0.0, le=1.0, allow_inf_nan=False)
    seed: int | None = Field(default=None, ge=0, le=2**31 - 1)
    n: int = Field(default=1, ge=1, le=64)
    stop: StopString | Annotated[list[StopString], Field(max_length=4)] | None = None
    # Not OpenAI: the model's repetition penalty (1.0 = off).
    repetition_penalty: float | None = Field(default=None, ge=1.0, le=2.0, allow_inf_nan=False)
    # Streaming is not offered: only false (or nothing) is accepted.
    stream: Literal[False] | None = None
    # Accepted and ignored: they do not change what is generated.
    user: Annotated[str, Field(max_length=256)] | None = None
    store: StrictBool | None = None
    metadata: dict[Annotated[str, Field(max_length=64)], Annotated[str, Field(max_length=512)]] | None = None

    def generation_params(self) -> dict[str, Any]:
        """Our sampling parameters; OpenAI's defaults where the body says nothing (temperature 1, top_p 1)."""
        return {
            "max_new_tokens": self.max_completion_tokens or self.max_tokens or DEFAULT_MAX_TOKENS,
            "temperature": 1.0 if self.temperature is None else self.temperature,
            "top_p": 1.0 if self.top_p is None else self.top_p,
            "repetition_penalty": 1.1 if self.repetition_penalty is None else self.repetition_penalty,
        }

    def stop_list(self) -> list[str]:
        return [self.stop] if isinstance(self.stop, str) else list(self.stop or [])

    def generation_messages(self) -> list[dict[str, str]]:
        return [m.as_generation_message() for m in self.messages]


def messages_sha256(messages: list[dict[str, str]]) -> str:
    """The prompt fingerprint of a chat request: sha256 of its messages as compact JSON."""
    return hashlib.sha256(to_json(messages)).hexdigest()
