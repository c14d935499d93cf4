"""``response_format`` as OpenAI's Chat Completions API defines it (what the openai SDK's ``parse`` sends).

TypedDicts like the rest of the chat body (a batch validates one per line). The schema
itself is free-form JSON here; ``checks.output_format`` decides whether the worker's grammar
can enforce it.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, NotRequired

from pydantic import ConfigDict, Field, StrictBool, StrictStr, with_config
from typing_extensions import TypedDict

_STRICT = ConfigDict(extra="forbid", strict=True)


@with_config(_STRICT)
class JSONSchemaSpec(TypedDict):
    name: Annotated[StrictStr, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")]
    description: NotRequired[Annotated[StrictStr, Field(max_length=4096)] | None]
    # Optional in OpenAI's definition; required here, and an object: no schema, no grammar. (The openai
    # SDK's ``parse`` always sends one.) Said in the OpenAPI document, so a client generated from it knows.
    schema: dict[str, Any]
    # Recorded; the output follows the schema either way (the grammar allows nothing else).
    strict: NotRequired[StrictBool | None]


@with_config(_STRICT)
class TextFormat(TypedDict):
    type: Literal["text"]


@with_config(_STRICT)
class JSONObjectFormat(TypedDict):
    type: Literal["json_object"]


@with_config(_STRICT)
class JSONSchemaFormat(TypedDict):
    type: Literal["json_schema"]
    json_schema: JSONSchemaSpec


ResponseFormat = Annotated[TextFormat | JSONObjectFormat | JSONSchemaFormat, Field(discriminator="type")]
