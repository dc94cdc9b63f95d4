"""`minnow models build` is idempotent, checksummed, and rebuilds what is missing or damaged."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from pipeline.engine import weights
from pipeline.engine.artifacts import BUILD_RECIPE, WEIGHTS_DISTRIBUTION, artifact_dir, build, ensure


def with_weights(cache_dir: Path, model_cache: Path) -> Path:
    """`cache_dir` holding the weights `minnow models build` unpacked into the shared cache (none needed where the
    weights package is installed: it is found first)."""
    unpacked = weights.unpacked(model_cache)
    if unpacked is not None:
        shutil.copytree(unpacked, weights.folder(cache_dir))
    return cache_dir


@pytest.mark.slow
def test_build_writes_manifest_and_is_idempotent(tmp_path: Path, model_cache: Path) -> None:
    with_weights(tmp_path, model_cache)
    first = build(tmp_path)
    folder = artifact_dir(tmp_path)
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest == first
    assert manifest["recipe"] == BUILD_RECIPE
    assert manifest["source"]["package"] == WEIGHTS_DISTRIBUTION
    assert set(manifest["artifacts"]) == {"fp32", "int8", "tokenizer"}
    int8 = folder / manifest["artifacts"]["int8"]["file"]
    fp32 = folder / manifest["artifacts"]["fp32"]["file"]
    # int8 weights for 30 of the 36 weight MatMuls; the 47 MB word-embedding table and the FFN down-projections
    # stay fp32 (docs/architecture.md, Quantization), so the file is about 3/4 of fp32, no longer 1/4
    assert int8.stat().st_size < 0.8 * fp32.stat().st_size
    quant = manifest["quantization"]
    assert quant["format"] == "QDQ" and quant["per_channel"] and quant["calibration"]["texts"] > 1000
    stamp = int8.stat().st_mtime_ns

    assert build(tmp_path) == first  # second build: nothing rewritten
    assert int8.stat().st_mtime_ns == stamp

    int8.write_bytes(b"damaged")  # a truncated artifact no longer matches the manifest's size
    files = ensure(tmp_path, "int8")
    assert files.onnx_path.stat().st_size == manifest["artifacts"]["int8"]["bytes"]

    with int8.open("r+b") as f:  # same size, different bytes: only --verify re-hashes and catches it
        f.seek(100)
        f.write(b"\x00" * 16)
    rebuilt = build(tmp_path, verify_checksums=True)
    assert rebuilt["artifacts"]["int8"]["sha256"] == manifest["artifacts"]["int8"]["sha256"]
