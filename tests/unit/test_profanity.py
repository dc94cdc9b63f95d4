"""alt-profanity-check in numpy (pipeline/tasks/profanity.py): the exported weights score as the library does."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from pipeline.errors import ModelError
from pipeline.tasks.profanity import WEIGHTS_FILE, ProfanityModel
from tests.unit.bundled_texts import bundled_texts

HAS_LIBRARY = all(importlib.util.find_spec(m) for m in ("sklearn", "joblib", "profanity_check"))


def test_exported_weights_score_swearing_high_and_greetings_low() -> None:
    """The shipped export (no scikit-learn needed) separates obvious cases and keeps one score per text."""
    model = ProfanityModel.load()
    scores = model.probability(["what the fuck", "you absolute shithead", "good morning", "have a lovely day", ""])
    assert scores.shape == (5,)
    assert scores[0] > 0.9 and scores[1] > 0.9
    assert scores[2] < 0.1 and scores[3] < 0.1
    assert model.source.startswith("alt-profanity-check ")


def test_scores_do_not_depend_on_batch_mates() -> None:
    """A text scores the same alone and inside a batch (the sparse rows never mix)."""
    model = ProfanityModel.load()
    texts = ["fuck off", "nice day", "", "shit shit shit good"]
    together = model.probability(texts)
    alone = np.array([model.probability([t])[0] for t in texts])
    np.testing.assert_allclose(together, alone, atol=1e-12)


def test_a_foreign_file_is_a_model_error_naming_the_export(tmp_path: Path) -> None:
    """A file that is not the export fails to load with the command that writes it."""
    path = tmp_path / "x.npz"
    np.savez(path, idf=np.ones(3))
    with pytest.raises(ModelError, match=r"python -m pipeline.tasks.profanity"):
        ProfanityModel.load(path)


@pytest.mark.skipif(not HAS_LIBRARY, reason="scikit-learn and alt-profanity-check are not installed ([train])")
def test_numpy_scores_equal_the_library_on_thousands_of_texts() -> None:
    """On every bundled text and stressed variants (~4000), the numpy form equals sklearn's predict_proba to 1e-6."""
    from pipeline.tasks.profanity import library_model

    texts = bundled_texts()
    assert len(texts) > 3000
    vectorizer, model = library_model()
    expected = model.predict_proba(vectorizer.transform(texts))[:, 1]
    np.testing.assert_allclose(ProfanityModel.load().probability(texts), expected, atol=1e-6, rtol=0)


@pytest.mark.skipif(not HAS_LIBRARY, reason="scikit-learn and alt-profanity-check are not installed ([train])")
def test_shipped_export_is_what_the_installed_library_exports(tmp_path: Path) -> None:
    """Re-exporting from the installed library gives the shipped file's arrays (the file is not stale)."""
    from pipeline.tasks.profanity import export

    fresh = ProfanityModel.load(export(tmp_path / "p.npz"))
    shipped = ProfanityModel.load(WEIGHTS_FILE)
    assert fresh.vocabulary == shipped.vocabulary
    for name in ("idf", "weights", "bias", "slope", "offset"):
        np.testing.assert_array_equal(getattr(fresh, name), getattr(shipped, name))
