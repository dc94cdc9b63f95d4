"""Score the summarizer and the LEAD-3 / LONGEST-3 baselines with ROUGE (rouge-score, stemming on) on dialogue sets:
the bundled project-written one here, any labelled file through `minnow eval`."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pipeline.engine.encoder import Encoder, Vectors
from pipeline.settings import SummarySettings
from pipeline.tasks.rouge import corpus_rouge, rouge_scores
from pipeline.tasks.summarize import dialogue_segments, lead_n, longest_n, render_lines, summarize

Unit = Literal["sentence", "turn"]
DIALOGUES_PATH = Path(__file__).resolve().parent.parent / "data" / "dialogue_summaries.jsonl"
BASELINE_SENTENCES = 3


@dataclass(frozen=True)
class EmbeddedDialogue:
    """One evaluation dialogue, cut into segments (sentences or turns) and embedded."""

    id: str
    segments: list[str]
    speakers: list[str]
    vectors: Vectors
    doc_vector: Vectors
    reference: str


def load_dialogues(encoder: Encoder, path: Path = DIALOGUES_PATH, *, unit: Unit = "sentence") -> list[EmbeddedDialogue]:
    """Read the JSONL set; embed each dialogue as one pre-split document, as the engine does.

    `unit="sentence"` cuts turns into sentences first; `unit="turn"` keeps whole turns, which is what the
    engine feeds the summarizer for a `Conversation` event.
    """
    records = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return embed_dialogues(encoder, records, unit=unit)


def embed_dialogues(encoder: Encoder, records: list[dict[str, Any]], *, unit: Unit) -> list[EmbeddedDialogue]:
    """Embed {"id", "turns": [{"speaker", "text"}], "summary"} records as the engine embeds conversations."""
    dialogues: list[EmbeddedDialogue] = []
    for record in records:
        turns = [(t["speaker"], t["text"]) for t in record["turns"]]
        pieces, voices = dialogue_segments(turns) if unit == "sentence" else _unzip(turns)
        doc = encoder.embed_documents([pieces], [True])[0]
        dialogues.append(
            EmbeddedDialogue(
                id=record["id"],
                segments=doc.segments,
                speakers=[voices[source] for source in doc.segment_sources],  # the encoder may drop empties
                vectors=doc.segment_vectors,
                doc_vector=doc.vector,
                reference=record["summary"],
            )
        )
    return dialogues


def _unzip(turns: list[tuple[str, str]]) -> tuple[list[str], list[str]]:
    return [text for _, text in turns], [speaker for speaker, _ in turns]


def score_dialogues(dialogues: list[EmbeddedDialogue], settings: SummarySettings) -> dict[str, dict[str, float]]:
    """Mean ROUGE-1/2/L F1 (rouge-score, stemming on) per method; every method's lines are rendered alike."""
    return _score(dialogues, settings)[0]


def score_with_confidence(
    dialogues: list[EmbeddedDialogue], settings: SummarySettings, min_confidence: float
) -> dict[str, Any]:
    """`score_dialogues`, plus ROUGE-1 of the summaries a confidence threshold escalates vs those it keeps."""
    means, per_dialogue = _score(dialogues, settings)
    escalated = [r1 for conf, r1 in per_dialogue if conf < min_confidence]
    kept = [r1 for conf, r1 in per_dialogue if conf >= min_confidence]
    return {
        **means,
        "escalation": {
            "min_confidence": min_confidence,
            "escalated": len(escalated),
            "rouge1_escalated": sum(escalated) / len(escalated) if escalated else None,
            "rouge1_kept": sum(kept) / len(kept) if kept else None,
        },
    }


def _score(
    dialogues: list[EmbeddedDialogue], settings: SummarySettings
) -> tuple[dict[str, dict[str, float]], list[tuple[float, float]]]:
    minnow: list[tuple[str, str]] = []
    lead: list[tuple[str, str]] = []
    longest: list[tuple[str, str]] = []
    per_dialogue: list[tuple[float, float]] = []  # (confidence, ROUGE-1) of each Minnow summary
    for d in dialogues:
        summary = summarize(d.segments, d.vectors, d.doc_vector, speakers=d.speakers, settings=settings)
        minnow.append((summary.text, d.reference))
        per_dialogue.append((summary.confidence, rouge_scores(summary.text, d.reference)["rouge1"]))
        lead.append((render_lines(lead_n(d.segments, BASELINE_SENTENCES), d.segments, d.speakers), d.reference))
        longest.append((render_lines(longest_n(d.segments, BASELINE_SENTENCES), d.segments, d.speakers), d.reference))
    means = {"minnow": corpus_rouge(minnow), "lead3": corpus_rouge(lead), "longest3": corpus_rouge(longest)}
    return means, per_dialogue


def evaluate_dialogues(
    encoder: Encoder,
    path: Path = DIALOGUES_PATH,
    settings: SummarySettings | None = None,
    *,
    unit: Unit = "sentence",
) -> dict[str, dict[str, float]]:
    """Mean ROUGE-1/2/L F1 of Minnow, LEAD-3 and LONGEST-3 on a dialogue JSONL set (keys as in ROUGE_KEYS)."""
    return score_dialogues(load_dialogues(encoder, path, unit=unit), settings or SummarySettings())


def format_table(scores: dict[str, dict[str, float]]) -> str:
    """The scores as a Markdown table, in percent, as docs/summarization.md shows them."""
    names = {"minnow": "Minnow", "lead3": "LEAD-3", "longest3": "LONGEST-3"}
    rows = ["| method | ROUGE-1 | ROUGE-2 | ROUGE-L |", "|---|---:|---:|---:|"]
    for key, label in names.items():
        r = scores[key]
        rows.append(f"| {label} | {r['rouge1'] * 100:.2f} | {r['rouge2'] * 100:.2f} | {r['rougeL'] * 100:.2f} |")
    return "\n".join(rows)


if __name__ == "__main__":
    from pipeline.engine import load_encoder
    from pipeline.settings import load_settings

    settings = load_settings()
    encoder = load_encoder(settings.engine)
    for unit in ("sentence", "turn"):
        print(f"\nunit: {unit}\n")
        print(format_table(evaluate_dialogues(encoder, settings=settings.summary, unit=unit)))
