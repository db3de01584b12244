"""Mean-pooled token embeddings for the injection classifier, from the model inside ``wordllama``'s wheel.

Why: the TF-IDF blocks only match surface forms, so "disregard what you were told before" and
"ignore previous instructions" share few grams. WordLlama's ``l2_supercat`` table (Llama-2's 32,000
tokens, 256 dimensions, trained for sentence similarity) puts such phrasings near each other. It is
the only sentence-similarity model we found that ships *inside* a pip package (``wordllama``'s wheel
holds the weights and the tokenizer), so the guard still fetches nothing from a hub. It reads
English best: the Llama-2 tokenizer falls back to bytes for Indic and Thai scripts.

Only the table and the tokenizer are read (with ``safetensors`` and ``tokenizers``, WordLlama's own
dependencies); ``wordllama`` itself is not imported, because its loader looks for the tokenizer in a
folder its wheel does not have and then tries to download it. The pooled vector is the mean of the
token vectors (the start token included), scaled to unit length, as WordLlama's ``embed`` does.
The table's sha256 is stored with a trained model, so a wheel whose weights differ is refused rather
than scored with vectors the classifier never saw.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
from pathlib import Path
from typing import Any

import numpy as np

from modelplane.serve._deps import require
from modelplane.serve.errors import ModelValidationFailed

MODEL_NAME = "wordllama/l2_supercat_256"
_TOKENIZER_FILE = Path("tokenizers") / "l2_supercat_tokenizer_config.json"
_WEIGHTS_FILE = Path("weights") / "l2_supercat_256.safetensors"
_INSTALL_HINT = "pip install 'modelplane[serve]' (or pip install wordllama)"


class TokenEmbedding:
    """Unit-length mean of a text's token vectors (``dim`` floats)."""

    def __init__(self, tokenizer: Any, table: np.ndarray, sha256: str) -> None:
        self.tokenizer = tokenizer
        self.table = table
        self.sha256 = sha256
        self.dim = int(table.shape[1])

    @classmethod
    @functools.cache
    def load(cls) -> TokenEmbedding:
        """The table and tokenizer from the installed ``wordllama`` wheel (read once per process)."""
        spec = importlib.util.find_spec("wordllama")
        if spec is None or not spec.submodule_search_locations:
            raise ModelValidationFailed(
                f"the injection classifier embeds prompts with {MODEL_NAME}, and wordllama is not installed",
                hint=_INSTALL_HINT,
            )
        root = Path(next(iter(spec.submodule_search_locations)))
        tokenizer_path, weights_path = root / _TOKENIZER_FILE, root / _WEIGHTS_FILE
        for p in (tokenizer_path, weights_path):
            if not p.exists():
                raise ModelValidationFailed(
                    f"{p} is missing from the installed wordllama package", hint=_INSTALL_HINT
                )
        tokenizers = require("tokenizers", package="wordllama")
        safetensors_numpy = require("safetensors.numpy", package="wordllama")
        raw = weights_path.read_bytes()
        # kept as stored (float16, 16 MB): each request widens only its own rows to float64
        table = safetensors_numpy.load(raw)["embedding.weight"]
        return cls(
            tokenizers.Tokenizer.from_file(str(tokenizer_path)), table, hashlib.sha256(raw).hexdigest()
        )

    def embed(self, text: str) -> np.ndarray:
        ids: list[int] = self.tokenizer.encode(text).ids
        v: np.ndarray = self.table[ids].astype(np.float64).mean(axis=0)
        norm = float(np.linalg.norm(v))
        return v / norm if norm > 0 else v

    def embed_many(self, texts: list[str]) -> np.ndarray:
        """One row per text (``len(texts)`` x ``dim``)."""
        if not texts:
            return np.zeros((0, self.dim))
        return np.stack([self.embed(t) for t in texts])


class EmbeddingBlock:
    """A trained classifier's weights over ``TokenEmbedding`` (times ``scale``), as stored in its JSON."""

    def __init__(self, scale: float, coef: np.ndarray, sha256: str, model: str = MODEL_NAME) -> None:
        self.scale = scale
        self.coef = np.asarray(coef, dtype=np.float64)
        self.sha256 = sha256
        self.model = model

    def embedder(self) -> TokenEmbedding:
        """The installed table, refused unless it is the one these weights were trained on."""
        if self.model != MODEL_NAME:
            raise ModelValidationFailed(
                f"the classifier was trained on embeddings of {self.model!r}; this version reads {MODEL_NAME!r}",
                hint="retrain: python -m modelplane.serve.guards.injection train",
            )
        emb = TokenEmbedding.load()
        if emb.sha256 != self.sha256 or emb.dim != self.coef.size:
            raise ModelValidationFailed(
                f"the installed {MODEL_NAME} table (sha256 {emb.sha256[:12]}, {emb.dim} dims) is not the one "
                f"the classifier was trained on (sha256 {self.sha256[:12]}, {self.coef.size} dims)",
                hint="install the pinned wordllama (pip install -c constraints.txt 'modelplane[serve]') or "
                "retrain: python -m modelplane.serve.guards.injection train",
            )
        return emb

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "sha256": self.sha256,
            "scale": self.scale,
            "coef": [round(float(w), 6) for w in self.coef],
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> EmbeddingBlock:
        try:
            return cls(
                float(d["scale"]), np.array(d["coef"], dtype=np.float64), str(d["sha256"]), str(d["model"])
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelValidationFailed(
                f"the classifier's embedding block is malformed ({exc!r}); it needs model, sha256, scale and coef",
                hint="retrain: python -m modelplane.serve.guards.injection train",
            ) from exc
