"""Moderation heads: profanity-check's linear model (pipeline/tasks/profanity.py), a hashed n-gram model and
embedding heads per category, stacked by a calibration layer; trained offline (pipeline/tasks/moderation_train.py)
and shipped as moderation_heads.npz."""

from __future__ import annotations

import io
import json
import os
import re
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from pipeline.errors import ConfigError, ModelError
from pipeline.tasks.hashing import (
    HashedRows,
    binary_l2_bucket_rows,
    binary_l2_rows,
    char_wb_buckets,
    hstack,
    word_ngrams,
)

Floats = NDArray[np.float64]
Sparse = Any  # HashedRows at run time; a scipy.sparse csr_matrix in training (scipy has no type stubs here)

CATEGORIES: tuple[str, ...] = (
    "harassment",
    "hate",
    "self-harm",
    "sexual",
    "violence",
    "illicit",
    "profanity",
    "spam",
)
# Bump when the features or the file layout change: a shipped file of another recipe is refused at load.
HEAD_RECIPE = "moderation-heads-3"
TRAIN_COMMAND = "python -m pipeline.tasks.moderation_train --data-dir ../shared/data"

DATA_DIR = Path(__file__).resolve().parent.parent / "data"
SEED_FILE = DATA_DIR / "moderation_seed.jsonl"
CONFIG_FILE = DATA_DIR / "moderation.yaml"
EVAL_FILE = DATA_DIR / "moderation_eval.jsonl"
HEADS_FILE = DATA_DIR / "moderation_heads.npz"


def _sigmoid(x: Floats) -> Floats:
    out: Floats = 0.5 * (1.0 + np.tanh(0.5 * x))  # tanh form: no overflow warning for large |x|
    return out


def _logit(p: Floats) -> Floats:
    q = np.clip(p, 1e-6, 1 - 1e-6)
    out: Floats = np.log(q / (1 - q))
    return out


# ---------------------------------------------------------------------------------------------- lexical
# Word 1-2-grams and character 2-5-grams (within word boundaries), hashed: no vocabulary to ship, the same features
# at training and at load. Handles, links and retweet marks are normalised first, as the tweet sets anonymise them.
WORD_FEATURES = 2**16
CHAR_FEATURES = 2**17
LEXICAL_FEATURES = WORD_FEATURES + CHAR_FEATURES
_HANDLE = re.compile(r"@\w+")
_LINK = re.compile(r"https?://\S+|www\.\S+")
_RETWEET = re.compile(r"\brt\b:?")


def normalise(text: str) -> str:
    text = _LINK.sub(" url ", text.lower().replace("&amp;", "&"))
    return _RETWEET.sub(" ", _HANDLE.sub(" @user ", text))


class Lexical:
    """The hashed n-gram featurizer: scikit-learn's HashingVectorizer with fixed parameters (binary, l2, no
    alternate sign), computed without scikit-learn by pipeline/tasks/hashing.py."""

    def features(self, texts: Sequence[str]) -> HashedRows:
        """(texts, LEXICAL_FEATURES) sparse rows, each half L2-normalised."""
        clean = [normalise(t) for t in texts]
        words = binary_l2_rows((word_ngrams(t, (1, 2)) for t in clean), WORD_FEATURES)
        chars = binary_l2_bucket_rows((char_wb_buckets(t, (2, 5), CHAR_FEATURES) for t in clean), CHAR_FEATURES)
        return hstack([words, chars])


# ------------------------------------------------------------------------------------------------- heads
def mlp_logit(vectors: Floats, w1: Floats, b1: Floats, w2: Floats, b2: float) -> Floats:
    """The logit of a one-hidden-layer ReLU network (scikit-learn MLPClassifier's forward pass, in numpy)."""
    hidden = np.maximum(vectors @ w1 + b1, 0.0)
    out: Floats = hidden @ w2 + b2
    return out


@dataclass(frozen=True)
class ModerationHeads:
    """Per category: a head over the embedding, a logistic one over hashed n-grams, and profanity-check, stacked.

    score = sigmoid(w_emb * emb + w_lex * (ngrams @ lex_coef + lex_bias) + w_prof * logit(P_profanity) + offset)
    where emb is `vector @ emb_coef + emb_bias`, or, for the categories with `mlp_on`, the logit of a small MLP
    over the vector (`mlp_w1`, `mlp_b1`, `mlp_w2`, `mlp_b2`). A zero stacking weight switches an input off for a
    category (`profanity` uses profanity-check alone).
    """

    emb_coef: Floats  # (dim, categories)
    emb_bias: Floats  # (categories,)
    lex_coef: NDArray[np.float32]  # (LEXICAL_FEATURES, categories)
    lex_bias: Floats
    w_emb: Floats
    w_lex: Floats
    w_prof: Floats
    offset: Floats
    mlp_on: Floats  # (categories,) 1.0 where the embedding input is the MLP's logit
    mlp_w1: Floats  # (categories, dim, hidden), zeros where not mlp_on
    mlp_b1: Floats  # (categories, hidden)
    mlp_w2: Floats  # (categories, hidden)
    mlp_b2: Floats  # (categories,)

    @property
    def dim(self) -> int:
        return int(self.emb_coef.shape[0])

    def parts(self, vectors: NDArray[np.floating], ngrams: Sparse, profanity: Floats) -> tuple[Floats, Floats, Floats]:
        """The three stacked inputs: embedding-head logits, n-gram-head logits, profanity logits."""
        x = np.asarray(vectors, dtype=np.float64)
        emb = x @ self.emb_coef + self.emb_bias
        for k in np.flatnonzero(self.mlp_on):
            emb[:, k] = mlp_logit(x, self.mlp_w1[k], self.mlp_b1[k], self.mlp_w2[k], float(self.mlp_b2[k]))
        lex = np.asarray(ngrams @ self.lex_coef, dtype=np.float64) + self.lex_bias
        return emb, lex, _logit(profanity)

    def scores(self, vectors: NDArray[np.floating], ngrams: Sparse, profanity: Floats) -> Floats:
        emb, lex, prof = self.parts(vectors, ngrams, profanity)
        return _sigmoid(emb * self.w_emb + lex * self.w_lex + prof[:, None] * self.w_prof + self.offset)

    def save(self, path: Path) -> None:
        buffer = io.BytesIO()
        arrays = {k: getattr(self, k) for k in _HEAD_FIELDS}
        arrays["lex_coef"] = self.lex_coef.astype(np.float16)  # halves the shipped file; scores move < 1e-3
        arrays["mlp_w1"] = self.mlp_w1.astype(np.float32)
        np.savez_compressed(buffer, categories=np.array(CATEGORIES), recipe=np.array(HEAD_RECIPE), **arrays)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
        with os.fdopen(fd, "wb") as f:
            f.write(buffer.getvalue())
        os.replace(tmp, path)  # atomic: a reader never sees a half-written file

    @classmethod
    def load(cls, path: Path = HEADS_FILE) -> ModerationHeads:
        """The trained heads; a missing, unreadable or foreign file is a ModelError saying what to run."""
        try:
            with np.load(path, allow_pickle=False) as data:
                categories = tuple(str(c) for c in data["categories"])
                recipe = str(data["recipe"])
                arrays = {k: np.asarray(data[k]) for k in _HEAD_FIELDS}
        except (OSError, KeyError, ValueError) as exc:
            raise ModelError(f"cannot read moderation heads {path} ({exc}); run: {TRAIN_COMMAND}") from exc
        if categories != CATEGORIES or recipe != HEAD_RECIPE:
            raise ModelError(
                f"moderation heads {path} are for {list(categories)} ({recipe}), not {list(CATEGORIES)} "
                f"({HEAD_RECIPE}); run: {TRAIN_COMMAND}"
            )
        if arrays["lex_coef"].shape != (LEXICAL_FEATURES, len(CATEGORIES)):
            raise ModelError(
                f"moderation heads {path} have n-gram weights of shape {arrays['lex_coef'].shape}; run: {TRAIN_COMMAND}"
            )
        fields: dict[str, Any] = {k: v.astype(np.float64) for k, v in arrays.items()}
        fields["lex_coef"] = arrays["lex_coef"].astype(np.float32)
        return cls(**fields)


_HEAD_FIELDS = (
    "emb_coef",
    "emb_bias",
    "lex_coef",
    "lex_bias",
    "w_emb",
    "w_lex",
    "w_prof",
    "offset",
    "mlp_on",
    "mlp_w1",
    "mlp_b1",
    "mlp_w2",
    "mlp_b2",
)


# -------------------------------------------------------------------------------------------------- seed
def read_labelled(path: Path) -> tuple[list[str], NDArray[np.bool_]]:
    """Texts and their (texts, categories) label matrix from a `{"text", "categories"}` JSON-lines file."""
    texts: list[str] = []
    rows: list[list[bool]] = []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise ConfigError(f"cannot read moderation data {path}: {exc}") from exc
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
            text, cats = item["text"], set(item["categories"])
        except (ValueError, KeyError, TypeError) as exc:
            raise ConfigError(f"{path}:{number}: expected {{'text', 'categories'}}: {exc}") from exc
        if not isinstance(text, str) or not cats <= set(CATEGORIES):
            raise ConfigError(f"{path}:{number}: unknown categories {sorted(cats - set(CATEGORIES))}")
        texts.append(text)
        rows.append([c in cats for c in CATEGORIES])
    return texts, np.array(rows, dtype=bool).reshape(len(rows), len(CATEGORIES))
