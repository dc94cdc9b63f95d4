"""alt-profanity-check's model in numpy: its TF-IDF vocabulary, idf and five Platt-calibrated linear SVMs, exported.

The library ships a pickled scikit-learn pipeline; loading it needs scikit-learn, joblib and scipy (~150 MB
installed) for what is one sparse product. `export()` (run where scikit-learn and alt-profanity-check are installed:
`python -m pipeline.tasks.profanity`) writes the weights to pipeline/data/profanity_linear.npz; the worker scores
them here with numpy alone. The arithmetic is scikit-learn's (TfidfVectorizer: lowercase, `\\b\\w\\w+\\b` tokens, raw
counts times idf, l2 norm; CalibratedClassifierCV: mean over the SVMs of sigmoid(-(a * decision + b))), checked to
1e-6 against the library on real text by tests/unit/test_profanity.py where scikit-learn is installed.
alt-profanity-check is MIT-licensed (see NOTICE).
"""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import io
import os
import re
import tempfile
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from pipeline.errors import ModelError
from pipeline.tasks.hashing import HashedRows

Floats = NDArray[np.float64]
WEIGHTS_FILE = Path(__file__).resolve().parent.parent / "data" / "profanity_linear.npz"
EXPORT_COMMAND = "python -m pipeline.tasks.profanity"
_TOKEN = re.compile(r"(?u)\b\w\w+\b")
_ARRAYS = ("idf", "weights", "bias", "slope", "offset")


@dataclass(frozen=True)
class ProfanityModel:
    """P(offensive) from alt-profanity-check's exported linear form."""

    vocabulary: dict[str, int]
    idf: Floats  # (vocab,)
    weights: Floats  # (vocab, svms)
    bias: Floats  # (svms,)
    slope: Floats  # Platt a per SVM
    offset: Floats  # Platt b per SVM
    source: str  # the library and version the weights came from

    @classmethod
    def load(cls, path: Path = WEIGHTS_FILE) -> ProfanityModel:
        try:
            with np.load(path, allow_pickle=False) as data:
                words = bytes(data["vocabulary"]).decode("utf-8").split("\n")
                arrays = {
                    k: np.asarray(data[k], dtype=np.float64) for k in ("idf", "weights", "bias", "slope", "offset")
                }
                source = str(data["source"])
        except (OSError, KeyError, ValueError) as exc:
            raise ModelError(f"cannot read the profanity weights {path} ({exc}); run: {EXPORT_COMMAND}") from exc
        if not (len(words) == len(arrays["idf"]) == len(arrays["weights"])):
            raise ModelError(f"the profanity weights {path} are inconsistent; run: {EXPORT_COMMAND}")
        return cls(vocabulary={w: i for i, w in enumerate(words)}, source=source, **arrays)

    def probability(self, texts: Sequence[str]) -> Floats:
        """P(offensive) per text."""
        decision = self._tfidf(texts) @ self.weights + self.bias  # (n, svms)
        return np.asarray(_sigmoid(-(decision * self.slope + self.offset)).mean(axis=1), dtype=np.float64)

    def _tfidf(self, texts: Sequence[str]) -> HashedRows:
        """TfidfVectorizer.transform: raw counts of in-vocabulary tokens times idf, each row l2-normalised."""
        rows: list[int] = []
        cols: list[int] = []
        for row, text in enumerate(texts):
            for token in _TOKEN.findall(text.lower()):
                column = self.vocabulary.get(token)
                if column is not None:
                    rows.append(row)
                    cols.append(column)
        shape = (len(texts), len(self.idf))
        if not rows:
            empty = np.zeros(0, dtype=np.int64)
            return HashedRows(empty, empty, np.zeros(0), shape)
        pairs, counts = np.unique(np.array([rows, cols], dtype=np.int64).T, axis=0, return_counts=True)
        values = counts * self.idf[pairs[:, 1]]
        norms = np.zeros(len(texts))
        np.add.at(norms, pairs[:, 0], values * values)
        return HashedRows(pairs[:, 0].copy(), pairs[:, 1].copy(), values / np.sqrt(norms[pairs[:, 0]]), shape)


def _sigmoid(x: Floats) -> Floats:
    out: Floats = 0.5 * (1.0 + np.tanh(0.5 * x))  # tanh form: no overflow warning for large |x|
    return out


# ------------------------------------------------------------------------------------------------ export
def library_model() -> tuple[Any, Any]:
    """(vectorizer, calibrated model) as alt-profanity-check ships them (needs scikit-learn and joblib)."""
    import joblib
    from sklearn.exceptions import InconsistentVersionWarning

    spec = importlib.util.find_spec("profanity_check")
    if spec is None or not spec.submodule_search_locations:
        raise ModelError("alt-profanity-check is not installed; run: pip install 'minnow-stream[train]'")
    data = Path(next(iter(spec.submodule_search_locations))) / "data"
    with warnings.catch_warnings():
        # Pickled by an older scikit-learn; the export is checked against the library's own scores.
        warnings.simplefilter("ignore", InconsistentVersionWarning)
        return joblib.load(data / "vectorizer.joblib"), joblib.load(data / "model.joblib")


def export(path: Path = WEIGHTS_FILE) -> Path:
    """Write the library's vocabulary, idf and linear form to `path` (compressed .npz, no pickles)."""
    vectorizer, model = library_model()
    params = vectorizer.get_params()
    expected = {"analyzer": "word", "lowercase": True, "ngram_range": (1, 1), "norm": "l2", "use_idf": True}
    if any(params.get(k) != v for k, v in expected.items()) or params.get("sublinear_tf") or params.get("binary"):
        raise ModelError(f"alt-profanity-check's vectorizer changed ({params}); the numpy form no longer applies")
    if params.get("token_pattern") != _TOKEN.pattern or params.get("preprocessor") or params.get("tokenizer"):
        raise ModelError("alt-profanity-check tokenizes differently now; the numpy form no longer applies")
    parts = model.calibrated_classifiers_
    if list(model.classes_) != [0, 1] or any(p.method != "sigmoid" or len(p.calibrators) != 1 for p in parts):
        raise ModelError("alt-profanity-check's calibration changed; the numpy form no longer applies")
    words = sorted(vectorizer.vocabulary_, key=vectorizer.vocabulary_.__getitem__)
    if any("\n" in w for w in words):
        raise ModelError("a vocabulary word holds a newline; the export format cannot carry it")
    buffer = io.BytesIO()
    np.savez_compressed(
        buffer,
        vocabulary=np.frombuffer("\n".join(words).encode("utf-8"), dtype=np.uint8),
        idf=np.asarray(vectorizer.idf_, dtype=np.float64),
        weights=np.stack([np.ravel(p.estimator.coef_) for p in parts], axis=1).astype(np.float64),
        bias=np.array([float(np.ravel(p.estimator.intercept_)[0]) for p in parts]),
        slope=np.array([float(p.calibrators[0].a_) for p in parts]),
        offset=np.array([float(p.calibrators[0].b_) for p in parts]),
        source=np.array(f"alt-profanity-check {importlib.metadata.version('alt-profanity-check')}"),
    )
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "wb") as f:
        f.write(buffer.getvalue())
    os.replace(tmp, path)
    return path


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="export alt-profanity-check's weights for the numpy scorer")
    parser.add_argument("--out", type=Path, default=WEIGHTS_FILE)
    args = parser.parse_args(argv)
    print(f"wrote {export(args.out)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
