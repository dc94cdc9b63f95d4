"""`minnow calibrate`: fit each family's classification threshold on labeled data to a stated target, with a
finite-sample guarantee, and write the thresholds file the worker reads (MINNOW_ROUTING__THRESHOLDS_FILE)."""

from __future__ import annotations

import sys
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from pipeline.engine import load_encoder
from pipeline.errors import ConfigError
from pipeline.settings import Settings
from pipeline.tasks.classify import Classifier, ClassifyTask
from pipeline.tasks.heads import OUT_OF_SCOPE_LABEL
from pipeline.tasks.risk import FamilyThreshold, Fitted, ThresholdsFile, fit_max_error, fit_max_escalation, sha256_file
from pipeline.training import LabeledRow, read_labeled

Embed = Callable[[Sequence[str]], NDArray[np.float32]]


@dataclass(frozen=True)
class Scored:
    """One family's calibration items as the router sees them."""

    method: str
    confidence: NDArray[np.float64]
    correct: NDArray[np.bool_]  # an out-of-scope item (label `oos`) is never correct
    forced: NDArray[np.bool_]  # escalated whatever the threshold: the head's out-of-scope score


def score_family(classifier: Classifier, family: str, rows: Sequence[LabeledRow], embed: Embed) -> Scored:
    texts = [r.text for r in rows]
    vectors = embed(texts)
    labels, probs, method = classifier.probabilities(family, vectors, texts)
    known = set(labels)
    strangers = sorted({r.label or "" for r in rows} - known - {OUT_OF_SCOPE_LABEL})
    if strangers:
        raise ConfigError(f"labels not in the '{family}' label set: {', '.join(strangers)}")
    pred = [labels[i] for i in probs.argmax(axis=1)]
    correct = np.asarray([p == r.label for p, r in zip(pred, rows, strict=True)], dtype=bool)
    oos = classifier.out_of_scope(family, vectors)
    oos_threshold = classifier.heads.out_of_scope_threshold(family)
    forced = (oos > oos_threshold) if oos is not None and oos_threshold is not None else np.zeros(len(rows), bool)
    return Scored(method, probs.max(axis=1), correct, np.asarray(forced, dtype=bool))


def fit_family(scored: Scored, target: str, level: float, delta: float) -> Fitted:
    if target == "max_error":
        return fit_max_error(scored.confidence, scored.correct, level, delta, forced=scored.forced)
    return fit_max_escalation(scored.confidence, scored.correct, level, delta, forced=scored.forced)


def family_threshold(scored: Scored, fitted: Fitted) -> FamilyThreshold:
    return FamilyThreshold(
        min_confidence=fitted.threshold,
        method=scored.method,
        guarantee=fitted.guarantee(),
        items=fitted.n,
        escalation_rate=round(fitted.escalation_rate, 6),
        auto_error_rate=round(fitted.auto_error_rate, 6),
        bound=round(fitted.bound, 6),
        out_of_scope_escalated=int(scored.forced.sum()),
    )


def by_family(rows: Sequence[LabeledRow], families: Sequence[str]) -> dict[str, list[LabeledRow]]:
    out: dict[str, list[LabeledRow]] = defaultdict(list)
    for row in rows:
        if row.label is not None and row.family in families:
            out[row.family].append(row)
    return dict(out)


def run(settings: Settings, data: Path, out: Path, *, target: str, level: float, delta: float) -> int:
    rows = read_labeled(data)
    encoder = load_encoder(settings.engine)
    # The thresholds being fitted replace any in force: the classifier is loaded without them.
    plain = settings.model_copy(update={"routing": settings.routing.model_copy(update={"thresholds_file": None})})
    classifier = ClassifyTask.load(plain, encoder).classifier
    groups = by_family(rows, classifier.families())
    if not groups:
        raise ConfigError(f"{data} has no labeled rows for a configured family ({', '.join(classifier.families())})")
    families: dict[str, FamilyThreshold] = {}
    for family, fam_rows in groups.items():
        scored = score_family(classifier, family, fam_rows, encoder.embed)
        try:
            families[family] = family_threshold(scored, fit_family(scored, target, level, delta))
        except ConfigError as exc:
            print(f"{family}: not calibrated: {exc}", file=sys.stderr)
    if not families:
        raise ConfigError(f"no family could be calibrated on {data}; see the lines above")
    thresholds = ThresholdsFile(
        target="max_error" if target == "max_error" else "max_escalation",
        level=level,
        delta=delta,
        created_at=datetime.now(UTC).isoformat(timespec="seconds"),
        model_version=encoder.files.version,
        data={"path": str(data), "sha256": sha256_file(data), "items": len(rows)},
        heads={"path": str(settings.head_file), "sha256": sha256_file(settings.head_file)}
        if settings.head_file
        else None,
        families=families,
    )
    thresholds.save(out)
    print(f"wrote {out}")
    for family, t in families.items():
        print(
            f"  {family} ({t.method}, {t.items} items): escalate below {t.min_confidence:.3f} -> escalated "
            f"{t.escalation_rate:.1%} (out of scope {t.out_of_scope_escalated}), error on the rest "
            f"{t.auto_error_rate:.2%} (bound {t.bound:.2%})\n    {t.guarantee}"
        )
    return 0
