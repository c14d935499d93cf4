"""The Chat Completions request body (the subset we run).

Strict like every body here: a field we do not support is refused by name rather than
silently ignored, except a few that change nothing about generation (``user``,
``store``, ``metadata``).

TypedDicts validated by pydantic, not models: a 50,000-line batch validates every
line with these, and building model instances cost about twice the validation
itself (bench/ingest.py). Constraints only, no Python validators, for the same reason
(but one on ``stream``, which is rarely sent).
The helpers below read a validated body.
"""

from __future__ import annotations

import hashlib
from typing import Annotated, Any, Literal, NotRequired

from pydantic import AfterValidator, ConfigDict, Field, StrictBool, StrictStr, with_config
from pydantic_core import to_json
from typing_extensions import TypedDict

from factory.config import SETTING_MAXIMUM_MARK, Settings
from factory.errors import InvalidInput
from factory.metadata import Metadata
from factory.models.registry import ModelName
from factory.structured import checks as structured_checks
from factory.structured.schemas import ResponseFormat

# The same bounds as a personalization job's GenerationParams.
MAX_TOKENS = 1024
# A message's text: the model's context is 8,192 tokens, and no token is longer than 8 characters
# in practice, so a longer text could never be read whole (the prompt caps check tokens exactly).
MAX_CONTENT_CHARS = 65_536
MAX_CONTENT_PARTS = 64
DEFAULT_MAX_TOKENS = 96
STRICT = ConfigDict(extra="forbid", strict=True)

StopString = Annotated[StrictStr, Field(min_length=1, max_length=64)]
Probability = Annotated[float, Field(gt=0.0, le=1.0, allow_inf_nan=False)]


def _not_true(streamed: bool) -> bool:
    if streamed:
        raise ValueError("streaming is not offered: send false or leave it out")
    return streamed


NotStreamed = Annotated[StrictBool, AfterValidator(_not_true), Field(json_schema_extra={"const": False})]


@with_config(STRICT)
class TextPart(TypedDict):
    type: Literal["text"]
    text: Annotated[StrictStr, Field(max_length=MAX_CONTENT_CHARS)]


@with_config(STRICT)
class ChatMessage(TypedDict):
    role: Literal["system", "developer", "user", "assistant"]
    content: (Annotated[StrictStr, Field(max_length=MAX_CONTENT_CHARS)]
              | Annotated[list[TextPart], Field(min_length=1, max_length=MAX_CONTENT_PARTS)])
    name: NotRequired[Annotated[str, Field(max_length=64)] | None]


@with_config(STRICT)
class ChatCompletionRequest(TypedDict):
    model: ModelName
    messages: Annotated[list[ChatMessage], Field(min_length=1, max_length=256)]
    max_tokens: NotRequired[Annotated[int, Field(ge=1, le=MAX_TOKENS)] | None]
    max_completion_tokens: NotRequired[Annotated[int, Field(ge=1, le=MAX_TOKENS)] | None]
    temperature: NotRequired[Annotated[float, Field(ge=0.0, le=2.0, allow_inf_nan=False)] | None]
    top_p: NotRequired[Probability | None]
    seed: NotRequired[Annotated[int, Field(ge=0, le=2**31 - 1)] | None]
    n: NotRequired[Annotated[int, Field(ge=1, le=64, json_schema_extra={SETTING_MAXIMUM_MARK: "max_variants"})]]
    stop: NotRequired[StopString | Annotated[list[StopString], Field(max_length=4)] | None]
    # Not OpenAI: the model's repetition penalty (1.0 = off).
    repetition_penalty: NotRequired[Annotated[float, Field(ge=1.0, le=2.0, allow_inf_nan=False)] | None]
    # Structured outputs (json_schema, json_object): factory/structured/.
    response_format: NotRequired[ResponseFormat | None]
    # Streaming is not offered: only false (or nothing) is accepted. Not Literal[False], which lets 0 through.
    stream: NotRequired[NotStreamed | None]
    # Accepted and ignored: they do not change what is generated.
    user: NotRequired[Annotated[str, Field(max_length=256)] | None]
    store: NotRequired[StrictBool | None]
    metadata: NotRequired[Metadata | None]


def generation_params(req: ChatCompletionRequest) -> dict[str, Any]:
    """Our sampling parameters; OpenAI's defaults where the body says nothing (temperature 1, top_p 1)."""
    temperature, top_p, penalty = req.get("temperature"), req.get("top_p"), req.get("repetition_penalty")
    return {
        "max_new_tokens": req.get("max_completion_tokens") or req.get("max_tokens") or DEFAULT_MAX_TOKENS,
        "temperature": 1.0 if temperature is None else float(temperature),
        "top_p": 1.0 if top_p is None else float(top_p),
        "repetition_penalty": 1.1 if penalty is None else float(penalty),
    }


def stop_list(req: ChatCompletionRequest) -> list[str]:
    stop = req.get("stop")
    return [stop] if isinstance(stop, str) else list(stop or [])


def output_format(req: ChatCompletionRequest, settings: Settings) -> dict[str, Any] | None:
    """The request's ``response_format`` for the worker (``structured.checks.output_format``), None for text."""
    fmt = structured_checks.output_format(req.get("response_format"), settings)
    if fmt is not None and req.get("stop"):
        raise InvalidInput("stop cannot be combined with response_format: a stop string could cut the JSON short",
                           field="stop")
    return fmt


def choices(req: ChatCompletionRequest) -> int:
    return req.get("n", 1)


def generation_messages(req: ChatCompletionRequest) -> list[dict[str, str]]:
    """{"role", "content"} per message, text parts joined; "developer" is the newer name of "system"."""
    return [{"role": "system" if m["role"] == "developer" else m["role"],
             "content": m["content"] if isinstance(m["content"], str) else "".join(p["text"] for p in m["content"])}
            for m in req["messages"]]


def last_user_message(messages: list[dict[str, str]]) -> str:
    """The item's ``prompt`` column: what a person reading the row wants to see."""
    for message in reversed(messages):
        if message["role"] == "user":
            return message["content"]
    return ""


def messages_sha256(messages: list[dict[str, str]]) -> str:
    """The prompt fingerprint of a chat request: sha256 of its messages as compact JSON."""
    return hashlib.sha256(to_json(messages)).hexdigest()
