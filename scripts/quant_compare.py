"""Compare the old dynamic int8 encoder with the static one, built side by side into a temporary folder.

Reports, per variant: int8-to-fp32 cosine (mean, min) over every bundled dialogue turn embedded alone, the
largest embedding drift when the same turns are embedded in shuffled batches of 8 and 32, and texts/s at batch
32 on short (~30 word pieces) and long (~150) texts, medians over repeats, variants interleaved so each repeat
sees the same machine load. Usage: python scripts/quant_compare.py [--repeats 5] [--seconds 1.0] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
from numpy.typing import NDArray
from onnxruntime.quantization import QuantType, quantize_dynamic
from safetensors.numpy import load_file
from tokenizers import Tokenizer

from pipeline.bench.model import _WORDS
from pipeline.engine import quantize
from pipeline.engine.artifacts import weights_dir
from pipeline.engine.encoder import pad
from pipeline.engine.graph import BertConfig, build_encoder_graph

DIALOGUES = Path(__file__).resolve().parents[1] / "pipeline" / "data" / "dialogue_summaries.jsonl"


def _session(path: Path, threads: int) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _embed(session: ort.InferenceSession, rows: list[list[int]]) -> NDArray[np.float32]:
    ids, mask = pad(rows)
    out: NDArray[np.float32] = session.run(["embedding"], {"input_ids": ids, "attention_mask": mask})[0]
    return out


def _build(folder: Path, tok_path: Path) -> dict[str, Path]:
    src = weights_dir()
    cfg = BertConfig.from_json(json.loads((src / "config.json").read_text()))
    paths = {name: folder / f"{name}.onnx" for name in ("fp32", "dynamic", "static", "static-other")}
    paths["fp32"].write_bytes(build_encoder_graph(load_file(str(src / "model.safetensors")), cfg).SerializeToString())
    logging.disable(logging.WARNING)
    quantize_dynamic(
        str(paths["fp32"]),
        str(paths["dynamic"]),
        weight_type=QuantType.QInt8,
        extra_options={"MatMulConstBOnly": True},
    )
    logging.disable(logging.NOTSET)
    here = quantize.choose_mode(quantize.cpu_flags())
    quantize.build_static_int8(paths["fp32"], paths["static"], tok_path, here)
    # the other CPU mode too (AVX2 mode where this CPU has an int8 dot product, and the reverse): its fidelity
    dot = here.weight_type == "QInt8"
    other = quantize.choose_mode(("avx2",) if dot else ("avx2", "avx512_vnni"))
    quantize.build_static_int8(paths["fp32"], paths["static-other"], tok_path, other)
    return paths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=1.0, help="per variant, text set and repeat")
    parser.add_argument("--threads", type=int, default=1, help="ONNX Runtime intra-op threads")
    args = parser.parse_args()

    tok_path = weights_dir() / "tokenizer.json"
    tok = Tokenizer.from_file(str(tok_path))
    tok.no_padding()
    tok.no_truncation()
    cls_id, sep_id = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    assert cls_id is not None and sep_id is not None

    def rows(texts: list[str]) -> list[list[int]]:
        return [[cls_id, *e.ids[:254], sep_id] for e in tok.encode_batch(texts, add_special_tokens=False)]

    turns = [
        t["text"] for line in DIALOGUES.read_text().splitlines() for t in json.loads(line)["turns"] if t["text"].strip()
    ]
    turn_rows = rows(turns)
    rng = random.Random(0)
    speed_sets = {}
    for name, tokens in (("short", 30), ("long", 150)):
        texts = []
        for _ in range(32):
            words: list[str] = []
            while len(tok.encode(" ".join(words), add_special_tokens=False).ids) < tokens:
                words += rng.sample(_WORDS, k=10)
            texts.append(" ".join(words))
        speed_sets[name] = rows(texts)

    report: dict[str, Any] = {"cpu_flags": list(quantize.cpu_flags()), "turns": len(turns), "variants": {}}
    with tempfile.TemporaryDirectory() as tmp:
        paths = _build(Path(tmp), tok_path)
        sessions = {name: _session(path, args.threads) for name, path in paths.items()}
        ref = np.stack([_embed(sessions["fp32"], [r])[0] for r in turn_rows])
        for name, session in sessions.items():
            alone = np.stack([_embed(session, [r])[0] for r in turn_rows])
            cos = np.sum(alone * ref, axis=1)
            drift = 0.0
            order = np.random.default_rng(1).permutation(len(turn_rows))
            for batch in (8, 32):
                for start in range(0, len(order), batch):
                    idx = order[start : start + batch]
                    out = _embed(session, [turn_rows[i] for i in idx])
                    drift = max(drift, float(np.abs(out - alone[idx]).max()))
            report["variants"][name] = {
                "bytes": paths[name].stat().st_size,
                "cos_mean": round(float(cos.mean()), 4),
                "cos_min": round(float(cos.min()), 4),
                "batch_drift_max": drift,
                "rates": {k: [] for k in speed_sets},
            }
        timed = [n for n in sessions if n != "static-other"]
        for _ in range(args.repeats):
            for set_name, set_rows in speed_sets.items():
                ids, mask = pad(set_rows)
                feed = {"input_ids": ids, "attention_mask": mask}
                for name in timed:
                    sessions[name].run(["embedding"], feed)
                    done, t0 = 0, time.perf_counter()
                    while time.perf_counter() - t0 < args.seconds:
                        sessions[name].run(["embedding"], feed)
                        done += len(ids)
                    report["variants"][name]["rates"][set_name].append(done / (time.perf_counter() - t0))
    for name, v in report["variants"].items():
        rates = v.pop("rates")
        v |= {f"{k}_per_s": round(statistics.median(r), 1) for k, r in rates.items() if r}
        print(f"{name:13} " + "  ".join(f"{k} {val}" for k, val in v.items()))
    print(json.dumps(report))


if __name__ == "__main__":
    main()
