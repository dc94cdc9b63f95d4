"""The `minnow` commands on files: one output line per input line, bad lines as error records, clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import orjson
import pytest

from pipeline.cli import main

EXAMPLES = Path(__file__).resolve().parents[2] / "docs" / "examples" / "events.jsonl"


@pytest.fixture(autouse=True)
def _cache(monkeypatch: pytest.MonkeyPatch, model_cache: Path) -> None:
    monkeypatch.setenv("MINNOW_ENGINE__CACHE_DIR", str(model_cache))


def _lines(out: str) -> list[dict[str, object]]:
    return [orjson.loads(line) for line in out.splitlines() if line.strip()]


def test_infer_accounts_for_every_line_of_the_bundled_examples(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["infer", str(EXAMPLES)]) == 0
    out = _lines(capsys.readouterr().out)
    sent = [line for line in EXAMPLES.read_text().splitlines() if line.strip()]
    assert len(out) == len(sent)
    errors = [r for r in out if "error" in r]
    assert [(r.get("id"), r["line"]) for r in errors] == [("bad-1", 13), (None, 14), ("bad-2", 15)]
    ok_ids = [r["id"] for r in out if "error" not in r]
    assert ok_ids == [json.loads(line)["id"] for line in sent if line.startswith("{") and '"bad-' not in line]


def test_embed_writes_unit_vectors_and_error_records(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = tmp_path / "texts.jsonl"
    src.write_text('{"id": "a", "text": "hello world"}\n{"id": "b"}\nnot json\n{"id": "c", "text": ""}\n')
    assert main(["embed", str(src), "--precision", "fp32"]) == 0
    out = _lines(capsys.readouterr().out)
    assert [r.get("id") for r in out] == ["a", None, None, "c"]
    vec = np.asarray(out[0]["embedding"])
    assert vec.shape == (384,) and abs(float(np.linalg.norm(vec)) - 1) < 1e-4
    assert [r.get("line") for r in out[1:3]] == [2, 3]


def test_train_then_eval_uses_the_trained_head(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rows = []
    texts = {
        "billing": [
            "I was charged twice",
            "my invoice is wrong",
            "refund the extra fee",
            "why is my bill so high",
        ],
        "technical_support": [
            "the app crashes on start",
            "wifi keeps dropping",
            "I cannot log in",
            "error 500 on the site",
        ],
    }
    for label, items in texts.items():
        rows += [{"family": "transcript", "text": t, "label": label} for t in items]
    data = tmp_path / "labeled.jsonl"
    data.write_text("\n".join(json.dumps(r) for r in rows))
    labels = tmp_path / "labels.yaml"
    labels.write_text(
        "label_sets:\n  transcript:\n    labels:\n"
        "      - {name: billing, description: charges invoices refunds and payments}\n"
        "      - {name: technical_support, description: something is broken or not working}\n"
    )
    heads = tmp_path / "heads.json"
    assert main(["train", "--data", str(data), "--out", str(heads), "--labels", str(labels)]) == 0
    assert "transcript: 2 labels, 8 examples" in capsys.readouterr().out
    assert main(["eval", "--data", str(data), "--labels", str(labels), "--heads", str(heads), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    body = report["classification"]["transcript"]
    assert body["method"] == "trained-head" and body["accuracy"] == 1.0
    assert Path(report["plot"]).stat().st_size > 1000


def test_infer_reads_events_of_your_own_shape_through_a_mapping(capsys: pytest.CaptureFixture[str]) -> None:
    """docs/mapping.md's example end to end: two posts mapped and scored with their original kept, one dead
    letter naming the unmapped field; every line accounted for."""
    examples = EXAMPLES.parent
    assert main(["infer", "--map", str(examples / "social-posts.map.yaml"), str(examples / "social-posts.jsonl")]) == 0
    out = _lines(capsys.readouterr().out)
    assert [r.get("route") or r.get("error") for r in out][2] == "mapping_error"
    assert [r["id"] for r in out] == ["90210", "90211", "90212"]
    first = out[0]
    assert first["kind"] == "feed" and first["original"]["user"] == {"handle": "@ana"}  # type: ignore[index]


def test_config_errors_exit_2_with_a_message(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "labels.yaml"
    bad.write_text("nope: 1\n")
    assert main(["infer", str(EXAMPLES), "--labels", str(bad)]) == 2
    assert "label_sets" in capsys.readouterr().err
    bad_map = tmp_path / "shape.map.yaml"
    bad_map.write_text("kind: feed\nfields: {id: $.uuid, text: $.t, source: x, created_at: $.c, colour: $.x}\n")
    assert main(["infer", str(EXAMPLES), "--map", str(bad_map)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "shape.map.yaml: feed events have no field colour" in err


def test_bench_model_reports_both_figures_and_their_ratio(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "model", "--json", "--seconds", "0.3", "--batch-sizes", "4"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert [(r["texts"], r["batch"]) for r in report["rows"]] == [("short", 4), ("long", 4)]
    for r in report["rows"]:
        assert r["bare_per_s"] > 0 and r["engine_per_s"] > 0
        # the ratio is the median of per-pair ratios: near, not equal to, the ratio of the medians
        assert r["ratio"] == pytest.approx(r["engine_per_s"] / r["bare_per_s"], rel=0.5)
    assert 50 < report["engine_peak_rss_mb"] <= report["peak_rss_mb"]


def test_eval_reports_moderation_and_summaries_when_rows_carry_them(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rows = [
        {"text": "You are a fucking idiot and a pathetic loser.", "categories": ["harassment"]},
        {"text": "The bakery on Main Street sells fresh bread every morning.", "categories": []},
        {
            "turns": [
                {"speaker": "agent", "text": "Hello, thanks for calling."},
                {"speaker": "customer", "text": "Hi. My parcel never arrived and the tracking stopped on Monday."},
                {"speaker": "agent", "text": "I can see it was returned to the depot; I will resend it tomorrow."},
                {"speaker": "customer", "text": "Okay, thanks."},
            ],
            "summary": "The customer's parcel was returned to the depot and the agent will resend it tomorrow.",
        },
    ]
    data = tmp_path / "mixed.jsonl"
    data.write_text("\n".join(json.dumps(r) for r in rows))
    assert main(["eval", "--data", str(data), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["moderation"]["items"] == 2
    assert report["moderation"]["categories"]["harassment"]["support"] == 1
    # The moderation operating point in force: the bakery is settled, and rightly; the insult is flagged, but its
    # `hate` score sits in hate's uncertain band (an insult that names no group is not hate: a second look at that
    # category is the honest answer), so it may escalate for that category alone (0.31 against the band's top 0.32
    # on one CPU: int8 scores differ between CPUs, so either outcome is accepted, never a wrong kept decision).
    at = report["moderation"]["at_threshold"]
    assert at["escalation_rate"] <= 0.5 and at["accuracy_kept"] == 1.0
    assert set(at["reasons"]) <= {"moderate.uncertain_category"}
    assert [row["escalation_rate"] for row in report["moderation"]["selective"]][:2] == [0.0, 0.05]
    summ = report["summarization"]
    assert summ["examples"] == 1
    assert 0 < summ["minnow"]["rouge1"] <= 1 and set(summ) == {"examples", "minnow", "lead3", "longest3", "escalation"}
    assert summ["escalation"]["escalated"] == 0  # the default threshold (0) escalates no summary


def test_sigterm_ends_any_command_with_143_even_as_pid_1(monkeypatch: pytest.MonkeyPatch) -> None:
    """main() installs a SIGTERM handler first thing, so a container's PID 1 (which drops signals it has no handler
    for) still stops on `docker stop` while the model loads or a one-shot command runs; the handler exits 143."""
    import signal

    from pipeline import cli

    seen: dict[int, object] = {}
    monkeypatch.setattr(signal, "signal", seen.setdefault)
    assert main(["topics", "schemas", "--check"]) in (0, 1)
    assert seen[signal.SIGTERM] is cli._exit_on_sigterm
    with pytest.raises(SystemExit) as stopped:
        cli._exit_on_sigterm(signal.SIGTERM, None)
    assert stopped.value.code == 143
