"""Template requests and responses. Strict: unknown fields are refused."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from factory.channels.specs import ChannelName
from factory.errors import InvalidInput
from factory.jobs.schemas import GenerationParams

VariableType = Literal["string", "integer", "number", "boolean"]
VariableName = Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")]
MAX_VARIABLES = 64
NAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")


def check_name(name: str) -> str:
    """Names of templates and brands (they appear in URLs): lowercase, digits, '.', '_', '-'."""
    if not NAME_PATTERN.fullmatch(name):
        raise InvalidInput("name must be 1-64 lowercase letters, digits, '.', '_' or '-'", field="name")
    return name


class TemplateBody(BaseModel):
    """A prompt template: sandboxed Jinja2 over declared, typed variables."""

    model_config = ConfigDict(extra="forbid", strict=True)

    channel: ChannelName | None = None
    source: Annotated[str, Field(min_length=1, max_length=100_000)]
    variables: Annotated[dict[VariableName, VariableType], Field(max_length=MAX_VARIABLES)]
    system_prompt: Annotated[str, Field(max_length=4000)] | None = None
    params: GenerationParams | None = None
    description: Annotated[str, Field(max_length=1000)] | None = None


class TemplateCreate(TemplateBody):
    name: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9._-]{0,63}$")]


class TemplateOut(BaseModel):
    object: Literal["template"] = "template"
    id: str
    name: str
    version: int
    channel: str | None
    source: str
    sha256: str
    variables: dict[str, str]
    system_prompt: str | None
    params: dict[str, Any]
    description: str | None
    created_at: datetime
