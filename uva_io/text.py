"""Text encoders: an episode's instruction -> a sequence of token vectors (max_tokens, dim),
computed once at encode time and stored in the shard (``lang.npy``); the model takes them as
prefix tokens, and the policy runs the same encoder on a new instruction. Instructions shorter
than ``max_tokens`` are padded with zero rows (the model's "no token"), longer ones truncated.

Specs (``text_encoder`` in configs/preprocess/*.yaml):

    hash[:DIM]             built in, nothing to download: a token per word of the lowercased
                           instruction, its signed feature hash (the word, the pair it ends, its
                           character trigrams) in DIM = 256 dimensions. It tells instructions
                           apart by their words, not by meaning ("pick the cup" and "grasp the
                           mug" share nothing), and different words get near-orthogonal tokens,
                           which the model picks up quickly.
    transformers:FOLDER    a text model saved in a local folder (``save_pretrained``): the last
                           hidden states of its tokens (T5 or any encoder-decoder: its encoder;
                           CLIP/SigLIP: the text tower; BERT-like: the model)

Every token vector is unit length, so the model's language projection sees the same scale
whichever encoder made them. (Tokens rather than one pooled vector: pooled embeddings of two
instructions that differ in one word are nearly parallel, and a model learns the difference
slowly; the differing word's own token is a clear signal.) ``identity`` names what made a vector (the spec's kind,
size and, for a folder, a hash of its files): training refuses to mix vectors of two encoders.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import numpy as np

DEFAULT_HASH_DIM = 256
DEFAULT_TOKENS = 16
_WORD = re.compile(r"[a-z0-9]+")


def _unit(x: np.ndarray) -> np.ndarray:
    """Each row at unit length; all-zero rows (padding) stay zero."""
    x = np.asarray(x, dtype=np.float32)
    norm = np.linalg.norm(x, axis=-1, keepdims=True)
    return (x / np.maximum(norm, 1e-12)).astype(np.float32)


class HashTextEncoder:
    """A token per word: signed feature hashing of the word (weight 1), the word pair it ends
    (0.5) and its character trigrams (0.25 each)."""

    def __init__(self, dim: int = DEFAULT_HASH_DIM, max_tokens: int = DEFAULT_TOKENS):
        if dim < 8:
            raise ValueError(f"text_encoder hash:{dim}: the size must be at least 8")
        self.dim, self.max_tokens = int(dim), int(max_tokens)
        self.spec = f"hash:{self.dim}"
        self.identity = f"hash-v2-{self.dim}"

    def _token(self, prev: str | None, word: str) -> np.ndarray:
        padded = f"^{word}$"
        feats = [(f"w:{word}", 1.0)] + [(f"c:{padded[i:i + 3]}", 0.25) for i in range(len(padded) - 2)]
        if prev is not None:
            feats.append((f"b:{prev}_{word}", 0.5))
        vec = np.zeros(self.dim, np.float32)
        for feat, weight in feats:
            h = int.from_bytes(hashlib.blake2b(feat.encode(), digest_size=8, key=b"uva-text").digest(), "little")
            vec[h % self.dim] += weight if (h >> 63) & 1 else -weight
        return vec

    def encode(self, texts: list[str]) -> np.ndarray:
        out = np.zeros((len(texts), self.max_tokens, self.dim), np.float32)
        for row, text in enumerate(texts):
            words = _WORD.findall(text.lower())[: self.max_tokens]
            for k, word in enumerate(words):
                out[row, k] = self._token(words[k - 1] if k else None, word)
        return _unit(out)


def folder_identity(folder: Path) -> str:
    """A hash of every file of a saved model folder (names and bytes)."""
    h = hashlib.sha256()
    for p in sorted(q for q in folder.rglob("*") if q.is_file()):
        h.update(str(p.relative_to(folder)).encode())
        with open(p, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()[:16]


class TransformersTextEncoder:
    """A text tower from a local folder through ``transformers`` (no download: local files only)."""

    def __init__(self, folder: str | Path, max_tokens: int = DEFAULT_TOKENS, batch_size: int = 64):
        self.folder = Path(folder)
        if not (self.folder / "config.json").is_file():
            raise ValueError(f"text_encoder transformers:{folder}: not a saved model folder (no config.json)")
        try:
            import transformers
        except ImportError as err:
            raise ValueError("text_encoder transformers:...: the 'transformers' package is not installed "
                             "(pip install 'uva-pipeline[text]')") from err
        import torch

        self.torch = torch
        self.tokenizer = transformers.AutoTokenizer.from_pretrained(str(self.folder), local_files_only=True)
        self.model = transformers.AutoModel.from_pretrained(str(self.folder), local_files_only=True).eval()
        self.batch_size, self.max_tokens = batch_size, int(max_tokens)
        self.spec = f"transformers:{self.folder}"
        self.dim = int(self.encode(["probe"]).shape[-1])
        self.identity = f"transformers-{self.model.config.model_type}-{self.dim}-{folder_identity(self.folder)}"

    def _hidden(self, tok: dict):
        model = self.model
        ids, mask = tok["input_ids"], tok["attention_mask"]
        if hasattr(model, "text_model"):  # CLIP / SigLIP: the text tower
            return model.text_model(input_ids=ids, attention_mask=mask).last_hidden_state
        if getattr(model.config, "is_encoder_decoder", False):  # T5 and kin: the encoder
            return model.get_encoder()(input_ids=ids, attention_mask=mask).last_hidden_state
        return model(**tok).last_hidden_state

    def encode(self, texts: list[str]) -> np.ndarray:
        rows = []
        with self.torch.no_grad():
            for i in range(0, len(texts), self.batch_size):
                tok = dict(self.tokenizer(list(texts[i:i + self.batch_size]), padding="max_length", truncation=True,
                                          max_length=self.max_tokens, return_tensors="pt"))
                hidden = self._hidden(tok) * tok["attention_mask"].unsqueeze(-1)  # padding: zero rows
                rows.append(hidden.float().cpu().numpy())
        if not rows:
            return np.zeros((0, self.max_tokens, getattr(self, "dim", 0)), np.float32)
        return _unit(np.concatenate(rows))


def load_text_encoder(spec: str, max_tokens: int = DEFAULT_TOKENS):
    """The encoder of a spec (see the module docstring); a bad spec is an error naming it."""
    if max_tokens < 1:
        raise ValueError(f"text max_tokens must be >= 1, got {max_tokens}")
    spec = str(spec).strip()
    kind, _, arg = spec.partition(":")
    if kind == "hash":
        if arg and not arg.isdigit():
            raise ValueError(f"text_encoder {spec!r}: hash takes a size, e.g. hash:256")
        return HashTextEncoder(int(arg) if arg else DEFAULT_HASH_DIM, max_tokens)
    if kind == "transformers":
        if not arg:
            raise ValueError(f"text_encoder {spec!r}: name the model folder, e.g. transformers:/models/t5-small")
        return TransformersTextEncoder(arg, max_tokens)
    raise ValueError(f"text_encoder {spec!r}: must be hash[:DIM] or transformers:FOLDER")


def describe(encoder) -> dict:
    """What index.json and model configs record about an encoder."""
    return {"spec": encoder.spec, "identity": encoder.identity, "dim": encoder.dim, "tokens": encoder.max_tokens}
