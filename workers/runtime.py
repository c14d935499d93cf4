"""The per-process generator: built once, reused by every task in this process."""

from __future__ import annotations

import logging
import threading
import time

from factory.config import Settings
from factory.metrics.definitions import MODEL_LOAD
from factory.models import registry
from workers.generators.base import Generator

log = logging.getLogger(__name__)

_lock = threading.Lock()
_generators: dict[str, Generator] = {}


def build_generator(settings: Settings, model: str) -> Generator:
    if settings.generator == "fake":
        from workers.generators.fake import FakeGenerator

        return FakeGenerator(model, delay_s=settings.fake_delay_s)
    from workers.generators.transformers_gen import TransformersGenerator
    from workers.model_store import materialize

    spec = registry.resolve(model, settings.model_allowlist)
    local = materialize(spec, settings.model_cache_dir)
    return TransformersGenerator(model, local.path, local.weights_sha256, device=settings.device,
                                 dtype=settings.torch_dtype, batch=settings.chunk_size,
                                 cache_dir=settings.model_cache_dir,
                                 grammar_cache_size=settings.structured_grammar_cache_size)


def get_generator(settings: Settings, model: str) -> Generator:
    """The loaded generator for ``model``, loading it on first use in this process."""
    with _lock:
        gen = _generators.get(model)
        if gen is None:
            started = time.perf_counter()
            gen = build_generator(settings, model)
            gen.load()
            seconds = time.perf_counter() - started
            _generators[model] = gen
            MODEL_LOAD.labels(model, gen.info.name).observe(seconds)
            log.info("loaded generator %s for %s on %s in %.2fs", gen.info.name, model, gen.info.device, seconds,
                     extra={"data": {"event": "model_loaded", "model": model, "generator": gen.info.name,
                                     "device": gen.info.device, "load_ms": round(seconds * 1000, 1)}})
        return gen


def unload_all() -> None:
    with _lock:
        for gen in _generators.values():
            gen.unload()
        _generators.clear()
