"""Turning a registry entry into a local Hugging Face–format directory, once.

The packaged SmolLM2 ships as a quantized GGUF file. Loading GGUF through
transformers dequantizes every tensor (~20-30 s on a small CPU), so the first
load converts it into a safetensors copy under ``FACTORY_MODEL_CACHE_DIR``; every
later load (every worker process start) reads that copy in well under a second.
The copy is keyed by the source file's sha256, so a new model file is a new copy.
Nothing is ever downloaded: hub models must already be in the local cache.
"""

from __future__ import annotations

import fcntl
import hashlib
import importlib.util
import json
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from factory.models.registry import ModelSpec

log = logging.getLogger(__name__)

os.environ.setdefault("HF_HUB_OFFLINE", "1")


@dataclass(frozen=True)
class LocalModel:
    path: Path
    weights_sha256: str


def file_sha256(path: Path, cache_dir: Path) -> str:
    """sha256 of a (large) file, remembered by (path, size, mtime) so it is computed once."""
    st = path.stat()
    memo = cache_dir / "sha256.json"
    key = f"{path.resolve()}:{st.st_size}:{st.st_mtime_ns}"
    known: dict[str, str] = json.loads(memo.read_text()) if memo.is_file() else {}
    if key in known:
        return known[key]
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    known[key] = digest.hexdigest()
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = memo.with_suffix(".tmp")
    tmp.write_text(json.dumps(known, indent=1))
    tmp.replace(memo)
    return known[key]


def _package_dir(package: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(f"model package '{package}' is not installed")
    return Path(next(iter(spec.submodule_search_locations)))


def _convert_gguf(src_dir: Path, gguf_file: str, dest: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    log.info("converting %s to safetensors (once)", gguf_file)
    tokenizer = AutoTokenizer.from_pretrained(src_dir, gguf_file=gguf_file)
    model = AutoModelForCausalLM.from_pretrained(
        src_dir, gguf_file=gguf_file, dtype=torch.bfloat16,
        quantization_config=GgufConfig(dequantize=True),
    )
    # A GGUF-loaded model refuses save_pretrained; copy its weights into a plain one.
    config = model.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    plain.load_state_dict(model.state_dict(), strict=True)
    tmp = dest.with_name(dest.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    plain.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    tmp.replace(dest)


def materialize(spec: ModelSpec, cache_dir: Path) -> LocalModel:
    """A directory that ``from_pretrained`` loads offline, converting on first use."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    if spec.source == "package":
        src_dir = _package_dir(spec.location)
        if not spec.gguf_file:
            return LocalModel(src_dir, _dir_sha256(src_dir, cache_dir))
        gguf = src_dir / spec.gguf_file
        sha = file_sha256(gguf, cache_dir)
        dest = cache_dir / f"{spec.name}-{sha[:16]}"
        if not (dest / "config.json").is_file():
            # One process converts; others wait on the lock, then find the copy.
            with (cache_dir / f".{spec.name}.lock").open("w") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX)
                if not (dest / "config.json").is_file():
                    _convert_gguf(src_dir, spec.gguf_file, dest)
        return LocalModel(dest, sha)
    if spec.source == "local":
        path = Path(spec.location)
        return LocalModel(path, _dir_sha256(path, cache_dir))
    from huggingface_hub import snapshot_download

    path = Path(snapshot_download(spec.location, local_files_only=True))
    return LocalModel(path, _dir_sha256(path, cache_dir))


def _dir_sha256(path: Path, cache_dir: Path) -> str:
    """One fingerprint for a directory's weight files (sha256 over their sha256s, by name)."""
    files = sorted(p for p in path.iterdir() if p.suffix in (".safetensors", ".bin", ".gguf"))
    if not files:
        raise RuntimeError(f"no weight files in model directory {path}")
    outer = hashlib.sha256()
    for f in files:
        outer.update(f"{f.name}:{file_sha256(f, cache_dir)}\n".encode())
    return outer.hexdigest()
