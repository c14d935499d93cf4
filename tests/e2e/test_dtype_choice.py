"""FACTORY_TORCH_DTYPE=auto: the worker measures each candidate dtype on a chunk-sized batch and keeps the
fastest, once per machine (the verdict is cached next to the converted model)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import torch

from factory.models.registry import known_models
from tests.conftest import MODEL_CACHE
from workers.generators import dtype_choice
from workers.generators.transformers_gen import TransformersGenerator
from workers.model_store import materialize

pytestmark = pytest.mark.slow


def test_auto_picks_the_dtype_that_measured_fastest_and_remembers_it(tmp_path: Path) -> None:
    local = materialize(known_models()["smollm2-135m-instruct"], MODEL_CACHE)
    cpu = torch.device("cpu")
    dtype, verdict = dtype_choice.choose(local.path, local.weights_sha256, cpu, 2, tmp_path)
    speeds = verdict["tokens_per_s"]
    assert set(speeds) == {"float32", "bfloat16"} and all(v > 0 for v in speeds.values())
    assert verdict["dtype"] == max(speeds, key=lambda k: speeds[k]) and dtype == getattr(torch, verdict["dtype"])

    started = time.monotonic()
    again = dtype_choice.choose(local.path, local.weights_sha256, cpu, 2, tmp_path)
    assert again == (dtype, verdict) and time.monotonic() - started < 1.0  # cached: nothing measured

    generator = TransformersGenerator("smollm2-135m-instruct", local.path, local.weights_sha256, device="cpu",
                                      dtype="auto", batch=2, cache_dir=tmp_path)
    assert generator.dtype == dtype and generator.info.dtype == verdict["dtype"]
    pinned = TransformersGenerator("smollm2-135m-instruct", local.path, local.weights_sha256, device="cpu",
                                   dtype="float32", batch=2, cache_dir=tmp_path)
    assert pinned.dtype == torch.float32
