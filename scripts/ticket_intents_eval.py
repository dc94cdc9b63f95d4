#!/usr/bin/env python3
"""Measure the `ticket` label set on banking77 (third-party support requests), zero-shot and with a trained head.

    python scripts/ticket_intents_eval.py --data ../shared/data/intents/banking77_train.csv
    python scripts/ticket_intents_eval.py --data ../shared/data/intents/banking77_train.csv --train \
        --cross-check ../shared/data/intents/clinc150_train_val.json --moderation     # every figure in docs/tickets.md
    python scripts/ticket_intents_eval.py --data ... --report --errors 20      # where the mistakes are

banking77 has 77 banking intents; MAPPING below sends the ones that clearly mean one of the help-desk labels to
that label, and the rest are left out (docs/tickets.md lists both). Each row is read as a ticket with an empty
subject, so the classification text ("subject\\n\\nbody") is the request itself. The mapped rows are split into two
halves, stratified by banking77 category and seeded: descriptions were tuned looking only at the first (the
"tuning half", also what `--train` fits a head on); the second is the held-out half. The dataset is read from its
path and never copied into the project; `--train` writes the training half to a temporary JSONL for `minnow train`.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import sys
import tempfile
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from pipeline.commands import train
from pipeline.engine import Encoder, load_encoder
from pipeline.models import Classification
from pipeline.settings import EngineSettings, Settings
from pipeline.stages.route import Router
from pipeline.tasks.classify import Classifier, ClassifyTask
from pipeline.tasks.heads import HeadFile
from pipeline.tasks.labels import LabelSet, bundled_labels_path
from pipeline.tasks.moderate import ModerateTask
from pipeline.training import read_labeled

FAMILY = "ticket"

# Help-desk label -> the banking77 categories that clearly ask for it. Decided from the category names and a few
# rows each, before any description was tuned. Left out (25 categories): fee questions that are as much pricing as
# billing (exchange_charge, top_up_by_*_charge), getting or activating a card (activate_my_card, card_about_to_expire,
# card_linking, get_physical_card, get_disposable_virtual_card, getting_spare_card, getting_virtual_card,
# order_physical_card, visa_or_mastercard), identity checks (verify_my_identity, why_verify_identity,
# unable_to_verify_identity, verify_source_of_funds, verify_top_up), and mixed or bank-only ones
# (apple_pay_or_google_pay, card_swallowed, exchange_rate, reverted_card_payment?, topping_up_by_card,
# transfer_into_account, transfer_timing, wrong_amount_of_cash_received).
MAPPING: dict[str, tuple[str, ...]] = {
    "account_access": ("passcode_forgotten", "pin_blocked"),
    "account_update": ("edit_personal_details", "change_pin"),
    "billing": (
        "card_payment_fee_charged",
        "cash_withdrawal_charge",
        "extra_charge_on_statement",
        "transaction_charged_twice",
        "transfer_fee_charged",
        "card_payment_wrong_exchange_rate",
        "wrong_exchange_rate_for_cash_withdrawal",
    ),
    "payment_issue": (
        "declined_card_payment",
        "declined_cash_withdrawal",
        "declined_transfer",
        "failed_transfer",
        "beneficiary_not_allowed",
        "top_up_failed",
        "top_up_reverted",
        "pending_card_payment",
        "pending_cash_withdrawal",
        "pending_top_up",
        "pending_transfer",
        "transfer_not_received_by_recipient",
        "balance_not_updated_after_bank_transfer",
        "balance_not_updated_after_cheque_or_cash_deposit",
    ),
    "refund": ("request_refund", "Refund_not_showing_up"),
    "cancellation": ("terminate_account", "cancel_transfer"),
    "order_status": ("card_arrival", "card_delivery_estimate"),
    "technical_issue": ("card_not_working", "contactless_not_working", "virtual_card_not_working"),
    "security": (
        "compromised_card",
        "lost_or_stolen_card",
        "lost_or_stolen_phone",
        "card_payment_not_recognised",
        "cash_withdrawal_not_recognised",
        "direct_debit_payment_not_recognised",
    ),
    "product_question": (
        "age_limit",
        "atm_support",
        "automatic_top_up",
        "card_acceptance",
        "country_support",
        "disposable_card_limits",
        "exchange_via_app",
        "fiat_currency_support",
        "receiving_money",
        "supported_cards_and_currencies",
        "top_up_by_cash_or_cheque",
        "top_up_limits",
    ),
}
HEAD_SIZES = (10, 30, None)  # `--train`: examples a label for the heads (None: the whole tuning half)
CATEGORY_TO_LABEL = {category: label for label, categories in MAPPING.items() for category in categories}

# `--cross-check`: CLINC150 intents (assistant requests in 10 domains, not only banking) that clearly ask for a
# help-desk label; its train and val rows together. Never tuned on; it only tells whether tuning on banking77 moved
# the other kinds of request. damaged_card ("my dog chewed my card, report it") is a replacement request, left out.
CLINC_MAPPING = {
    "account_blocked": "account_access",
    "pin_change": "account_update",
    "bill_balance": "billing",
    "bill_due": "billing",
    "card_declined": "payment_issue",
    "cancel_reservation": "cancellation",
    "order_status": "order_status",
    "report_fraud": "security",
    "report_lost_card": "security",
}


@dataclass(frozen=True)
class Row:
    text: str
    category: str
    label: str


@dataclass(frozen=True)
class Figures:
    """One method on one set of rows."""

    name: str
    n: int
    accuracy: float
    macro_f1: float
    escalated: float  # share below the classify threshold
    kept_accuracy: float  # accuracy on the rest
    unmapped_predictions: int  # predicted a label that no banking77 category maps to


def ticket_text(subject: str, body: str) -> str:
    """The text a ticket is classified on; the encoder's clean-up drops the blank lines of an empty subject."""
    return f"{subject}\n\n{body}"


def read_mapped(path: Path) -> tuple[list[Row], int, int]:
    """The mapped rows, the number of rows in the file, and how many categories it has."""
    try:
        with path.open(newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            if reader.fieldnames is None or not {"text", "category"} <= set(reader.fieldnames):
                raise SystemExit(f"{path}: expected a header with 'text' and 'category' (banking77 format)")
            raw = [(r["text"], r["category"]) for r in reader]
    except OSError as exc:
        raise SystemExit(f"cannot read {path}: {exc}") from exc
    categories = {category for _, category in raw}
    missing = sorted(set(CATEGORY_TO_LABEL) - categories)
    if missing:
        raise SystemExit(f"{path}: mapped categories not in the file (not banking77?): {', '.join(missing)}")
    rows = [Row(text, cat, CATEGORY_TO_LABEL[cat]) for text, cat in raw if cat in CATEGORY_TO_LABEL]
    return rows, len(raw), len(categories)


def read_clinc(path: Path) -> list[Row]:
    """The CLINC150 train and val rows whose intent is in CLINC_MAPPING."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        pairs = [(str(text), str(intent)) for text, intent in data["train"] + data["val"]]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise SystemExit(
            f"{path}: not the CLINC150 train/val JSON ({{'train': [[text, intent], ...], ...}}): {exc}"
        ) from exc
    return [Row(text, intent, CLINC_MAPPING[intent]) for text, intent in pairs if intent in CLINC_MAPPING]


def halves(rows: Sequence[Row], seed: int) -> tuple[list[int], list[int]]:
    """Row indices of the tuning/training half and the held-out half, stratified by banking77 category."""
    from sklearn.model_selection import train_test_split

    tune, held = train_test_split(
        np.arange(len(rows)), test_size=0.5, stratify=[r.category for r in rows], random_state=seed
    )
    return sorted(int(i) for i in tune), sorted(int(i) for i in held)


def score(name: str, results: Sequence[Classification], gold: Sequence[str], names: Sequence[str]) -> Figures:
    from sklearn.metrics import f1_score

    pred = [c.label for c in results]
    right = np.asarray([p == g for p, g in zip(pred, gold, strict=True)])
    kept = np.asarray([not c.reasons for c in results])  # a reason is what sends the item to escalation
    present = [n for n in names if n in set(gold)]
    return Figures(
        name=name,
        n=len(gold),
        accuracy=float(right.mean()),
        macro_f1=float(f1_score(gold, pred, labels=present, average="macro", zero_division=0)),
        escalated=float(1 - kept.mean()),
        kept_accuracy=float(right[kept].mean()) if kept.any() else float("nan"),
        unmapped_predictions=sum(p not in MAPPING for p in pred),
    )


def print_table(figures: Sequence[Figures], threshold: float) -> None:
    print(f"| method, rows | items | accuracy | macro-F1 | escalated at {threshold:.2f} | accuracy of the rest |")
    print("|---|---:|---:|---:|---:|---:|")
    for f in figures:
        print(f"| {f.name} | {f.n} | {f.accuracy:.3f} | {f.macro_f1:.3f} | {f.escalated:.1%} | {f.kept_accuracy:.3f} |")
    strays = ", ".join(f"{f.name} {f.unmapped_predictions}" for f in figures if f.unmapped_predictions)
    if strays:
        print(f"\npredicted a label that no category maps to (complaint, feedback): {strays}")


def report(rows: Sequence[Row], results: Sequence[Classification], names: Sequence[str], errors: int) -> None:
    """Per-label precision/recall, per-category accuracy (worst first), and the first `errors` mistakes."""
    from sklearn.metrics import classification_report

    gold = [r.label for r in rows]
    pred = [c.label for c in results]
    present = [n for n in names if n in set(gold)]  # complaint and feedback have no rows; their predictions are errors
    print("\n" + classification_report(gold, pred, labels=present, digits=3, zero_division=0))
    per_category: dict[str, list[bool]] = {}
    confusions: dict[str, Counter[str]] = {}
    for r, p in zip(rows, pred, strict=True):
        per_category.setdefault(r.category, []).append(p == r.label)
        if p != r.label:
            confusions.setdefault(r.category, Counter())[p] += 1
    print("| banking77 category | label | items | accuracy | mostly mistaken for |")
    print("|---|---|---:|---:|---|")
    for cat, hits in sorted(per_category.items(), key=lambda kv: float(np.mean(kv[1]))):
        top = ", ".join(f"{lab} {n}" for lab, n in confusions.get(cat, Counter()).most_common(2))
        print(f"| {cat} | {CATEGORY_TO_LABEL[cat]} | {len(hits)} | {np.mean(hits):.3f} | {top} |")
    wrong = [(r, c) for r, c in zip(rows, results, strict=True) if c.label != r.label]
    for r, c in wrong[:errors]:
        print(f"  [{r.category}] gold={r.label} pred={c.label} conf={c.confidence:.2f}  {r.text[:120]}")


def classify(
    classifier: Classifier, vectors: NDArray[np.float32], idx: Sequence[int], texts: Sequence[str]
) -> list[Classification]:
    """Rows `idx` classified; `texts` (all rows, as embedded) feed a head's lexical channel."""
    return classifier.classify(FAMILY, vectors[list(idx)], [texts[i] for i in idx])


def per_label(rows: Sequence[Row], idx: Sequence[int], cap: int | None, seed: int) -> list[int]:
    """At most `cap` seeded random rows of each label from `idx` (all of them when `cap` is None)."""
    if cap is None:
        return list(idx)
    taken: Counter[str] = Counter()
    chosen = []
    for i in np.random.default_rng(seed).permutation(np.asarray(idx)):
        if taken[rows[int(i)].label] < cap:
            taken[rows[int(i)].label] += 1
            chosen.append(int(i))
    return sorted(chosen)


def fit_head(settings: Settings, rows: Sequence[Row], idx: Sequence[int], folder: Path) -> Path:
    """`minnow train` on rows[idx], written to a temporary JSONL as a team would write its own tickets."""
    data, out = folder / f"train-{len(idx)}.jsonl", folder / f"heads-{len(idx)}.json"
    lines = [json.dumps({"family": FAMILY, "text": rows[i].text, "label": rows[i].label}) for i in idx]
    data.write_text("\n".join(lines) + "\n", encoding="utf-8")
    sys.stdout.flush()
    with contextlib.redirect_stdout(sys.stderr):  # what `minnow train` prints; stdout keeps the figures
        train.train_and_save(settings, read_labeled(data), out, origin=str(data), require_head=True)
    return out


def trained_figures(
    settings: Settings,
    encoder: Encoder,
    label_set: LabelSet,
    *,
    rows: Sequence[Row],
    vectors: NDArray[np.float32],
    texts: Sequence[str],
    split: tuple[list[int], list[int]],
    seed: int,
) -> list[Figures]:
    """Heads fitted with `minnow train` on (part of) the tuning half, scored on the held-out half next to zero-shot.

    A head needs examples of every label, and no banking77 category maps to complaint or feedback, so the heads and
    the zero-shot rows beside them use the label set without those two: the labels a team would have tickets for."""
    tune, held = split
    kept = {"label_sets": {FAMILY: {"labels": [lab.model_dump() for lab in label_set.labels if lab.name in MAPPING]}}}
    gold = [rows[i].label for i in held]
    figures = []
    with tempfile.TemporaryDirectory(prefix="minnow-tickets-") as tmp:
        labels = Path(tmp) / "labels.yaml"
        labels.write_text(json.dumps(kept), encoding="utf-8")  # JSON is YAML
        mapped = settings.model_copy(update={"labels_file": labels, "head_file": None})
        zero_shot = ClassifyTask.load(mapped, encoder).classifier
        names = zero_shot.label_sets[FAMILY].names
        n = len(names)
        figures.append(
            score(f"zero-shot, {n} labels, held-out half", classify(zero_shot, vectors, held, texts), gold, names)
        )
        for cap in HEAD_SIZES:
            idx = per_label(rows, tune, cap, seed)
            out = fit_head(mapped, rows, idx, Path(tmp))
            if cap is None:  # the zero-shot temperature fitted on the whole tuning half
                temperature = HeadFile.load(out).zero_shot_temperature[FAMILY]
                calibrated = Classifier(
                    zero_shot.label_sets,
                    zero_shot.prototypes,
                    HeadFile(heads={}, zero_shot_temperature={FAMILY: temperature}),
                    min_confidence=settings.routing.classify_min_confidence,
                )
                name = f"zero-shot, {n} labels, T={temperature:.3f} fitted on the tuning half, held-out half"
                figures.insert(1, score(name, classify(calibrated, vectors, held, texts), gold, names))
            with_head = ClassifyTask.load(mapped.model_copy(update={"head_file": out}), encoder).classifier
            size = "all of the tuning half" if cap is None else f"{cap} a label"
            name = f"trained head, {n} labels, {size} ({len(idx)} rows), held-out half"
            figures.append(score(name, classify(with_head, vectors, held, texts), gold, names))
    return figures


def moderation_report(
    settings: Settings, encoder: Encoder, rows: Sequence[Row], vectors: NDArray[np.float32], classifier: Classifier
) -> None:
    """Every banking77 row is a benign request: whatever moderation flags is a false flag. Also the routes that the
    zero-shot classification and moderation decide together (these requests are too short to be summarised)."""
    texts = [ticket_text("", r.text) for r in rows]
    moderations = ModerateTask.load(settings, encoder).moderator.moderate(texts, vectors)
    classifications = classifier.classify(FAMILY, vectors, texts)
    n = len(rows)
    flagged = Counter(cat for m in moderations for cat in m.flagged_categories)
    uncertain = sum(bool(m.uncertain_categories) for m in moderations)
    router = Router.configure(settings)
    routes = []
    for c, m in zip(classifications, moderations, strict=True):
        why = router.reasons({"classification": c, "moderation": m})
        routes.append(("escalate" if why else "sink", why))
    reasons = Counter(reason for _, why in routes for reason in set(why))
    escalated = sum(route == "escalate" for route, _ in routes)
    print(f"\nmoderation of all {n} mapped rows (benign support requests, so every flag is a false flag):")
    by_category = ", ".join(f"{cat} {k / n:.1%}" for cat, k in flagged.most_common())
    share_flagged = sum(m.flagged for m in moderations) / n
    print(f"  flagged {share_flagged:.1%} ({by_category or 'none'}); uncertain {uncertain / n:.1%}")
    print(f"  routed to escalation by zero-shot classification and moderation together: {escalated / n:.1%}")
    print("  reasons: " + ", ".join(f"{reason} {k / n:.1%}" for reason, k in reasons.most_common()))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    add = ap.add_argument
    add("--data", type=Path, required=True, help="banking77 CSV (text,category), e.g. ../shared/data/intents/...")
    add("--labels", type=Path, default=None, help="label YAML (default: the configured or bundled labels)")
    add("--precision", choices=["int8", "fp32"], default=None, help="model precision (default: as configured)")
    add("--seed", type=int, default=0, help="seed of the stratified half split (default 0)")
    add("--train", action="store_true", help="also fit a head on the tuning half and score it on the held-out half")
    add("--cross-check", type=Path, default=None, metavar="CLINC_JSON", help="also score mapped CLINC150 intents")
    add("--moderation", action="store_true", help="also moderate the rows: false flags and escalation routes")
    add(
        "--report",
        nargs="?",
        const="tuning",
        choices=["tuning", "held-out"],
        help="per-label and per-category tables of zero-shot on one half (default: the tuning half)",
    )
    add("--errors", type=int, default=0, metavar="N", help="with --report: print the first N mistakes")
    args = ap.parse_args(argv)

    settings = Settings()
    engine = settings.engine if args.precision is None else EngineSettings(precision=args.precision)
    # Zero-shot means no head, whatever MINNOW_HEAD_FILE says; --labels overrides MINNOW_LABELS_FILE.
    settings = settings.model_copy(
        update={"engine": engine, "head_file": None, "labels_file": args.labels or settings.labels_file}
    )
    rows, total, n_categories = read_mapped(args.data)
    encoder = load_encoder(settings.engine)
    classifier = ClassifyTask.load(settings, encoder).classifier
    if FAMILY not in classifier.label_sets:
        raise SystemExit(f"the label file has no '{FAMILY}' label set")
    names = classifier.label_sets[FAMILY].names
    unknown = sorted(set(MAPPING) - set(names))
    if unknown:
        raise SystemExit(f"mapped labels missing from the '{FAMILY}' label set: {', '.join(unknown)}")

    tune, held = halves(rows, args.seed)
    texts = [ticket_text("", r.text) for r in rows]
    vectors = encoder.embed(texts)
    threshold = settings.routing.classify_min_confidence
    print(f"data: {args.data}  ({total} rows, {n_categories} categories)")
    print(f"mapped: {len(CATEGORY_TO_LABEL)} categories -> {len(MAPPING)} labels, {len(rows)} rows used")
    print(f"halves (seed {args.seed}, stratified by category): tuning {len(tune)}, held-out {len(held)}")
    labels_path = settings.labels_file or bundled_labels_path()
    print(f"labels: {labels_path} ({FAMILY}: {len(names)} labels)  model: {encoder.files.precision}")
    print(f"escalation: confidence < {threshold:.2f} (MINNOW_ROUTING__CLASSIFY_MIN_CONFIDENCE)\n")

    figures = [
        score(f"zero-shot, {part}", classify(classifier, vectors, idx, texts), [rows[i].label for i in idx], names)
        for part, idx in (("all mapped rows", range(len(rows))), ("tuning half", tune), ("held-out half", held))
    ]
    if args.train:
        label_set = classifier.label_sets[FAMILY]
        figures += trained_figures(
            settings, encoder, label_set, rows=rows, vectors=vectors, texts=texts, split=(tune, held), seed=args.seed
        )
    if args.cross_check:
        clinc = read_clinc(args.cross_check)
        clinc_texts = [ticket_text("", r.text) for r in clinc]
        results = classifier.classify(FAMILY, encoder.embed(clinc_texts), clinc_texts)
        figures.append(
            score(f"zero-shot, CLINC150 {len(CLINC_MAPPING)} intents", results, [r.label for r in clinc], names)
        )
    print_table(figures, threshold)
    if args.moderation:
        moderation_report(settings, encoder, rows, vectors, classifier)
    if args.report:
        part = tune if args.report == "tuning" else held
        print(f"\n== zero-shot, {args.report} half")
        report([rows[i] for i in part], classify(classifier, vectors, part, texts), names, args.errors)
    return 0


if __name__ == "__main__":
    sys.exit(main())
