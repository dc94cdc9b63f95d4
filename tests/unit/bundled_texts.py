"""Texts for comparing Minnow's numpy scorers with the scikit-learn originals: every text the package bundles, and
variants of them that stress tokenization (case, runs of whitespace, tabs, accents, emoji, punctuation)."""

from __future__ import annotations

import json
from pathlib import Path

from pipeline.engine.quantize import calibration_texts

DIALOGUES = Path(__file__).resolve().parents[2] / "pipeline" / "data" / "dialogue_summaries.jsonl"


def bundled_texts() -> list[str]:
    texts = list(calibration_texts())
    for line in DIALOGUES.read_text().splitlines():
        texts.extend(turn["text"] for turn in json.loads(line)["turns"])
    variants = [
        f"{t.upper()}  \t{t[::-1]}\n😀 café — naïve!!"
        if i % 3 == 0
        else f"  {t.replace(' ', '   ')}  @user http://x.io"
        for i, t in enumerate(texts[:1500])
    ]
    edge = ["", " ", "a", "ab", "\t\n", "😀😀", "x" * 300, "I I I I", "ça va? ÇA VA!", "rt @someone: www.example.com"]
    return texts + variants + edge
