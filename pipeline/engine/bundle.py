"""The int8 model a wheel carries: built once per quantization mode when the wheel is built, picked at run time.

The int8 graph depends on the CPU (pipeline/engine/quantize.py, choose_mode: s8 weights where the CPU has an int8
dot product, u8 weights and two fp32 projections where it has not), so a wheel that must run anywhere carries one
graph per mode, with the tokenizer and a manifest; `carried()` returns the one for this CPU. Building needs the
weights and onnx (the `build` extra); using it needs neither. `make wheel` runs `minnow models bundle`.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from pipeline import assets
from pipeline.engine.artifacts import (
    BUILD_RECIPE,
    ModelFiles,
    _atomic_write,
    _quantization_current,
    _sha256,
    artifact_dir,
    build,
)

MODES = {"dot": ("avx512_vnni",), "u8": ("avx2",)}  # a CPU flag set that selects each mode in choose_mode


def _art(path: Path) -> dict[str, Any]:
    return {"file": path.name, "bytes": path.stat().st_size, "sha256": _sha256(path)}


def make(cache_dir: Path, out: Path) -> dict[str, Any]:
    """Write the bundle to `out`: the cache's model (built first if stale) plus an int8 graph for the other mode."""
    import onnx

    from pipeline.engine.quantize import build_static_int8, choose_mode

    manifest = build(cache_dir)
    source = artifact_dir(cache_dir)
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    tokenizer = out / "tokenizer.json"
    shutil.copyfile(source / manifest["artifacts"]["tokenizer"]["file"], tokenizer)
    variants: dict[str, Any] = {}
    for name, flags in MODES.items():
        target = out / f"encoder-int8-{name}.onnx"
        mode = choose_mode(flags)
        native = manifest["quantization"]
        if all(native.get(k) == v for k, v in mode.manifest().items() if k != "cpu_flags"):
            shutil.copyfile(source / manifest["artifacts"]["int8"]["file"], target)  # this CPU's: already built
            quantization = native
        else:
            with tempfile.TemporaryDirectory(dir=out) as tmp:
                built = Path(tmp) / "int8.onnx"
                quantization = build_static_int8(source / manifest["artifacts"]["fp32"]["file"], built, tokenizer, mode)
                onnx.checker.check_model(str(built))
                os.replace(built, target)
        variants[name] = _art(target) | {"quantization": quantization}
    carried = {k: manifest[k] for k in ("name", "version", "recipe", "source", "config", "onnx_opset")}
    carried |= {"tokenizer": _art(tokenizer), "variants": variants}
    _atomic_write(out / "manifest.json", json.dumps(carried, indent=2).encode())
    return carried


def carried(folder: Path | None = None) -> ModelFiles | None:
    """The carried int8 model for this CPU, or None (a checkout, a wheel built without one, another recipe)."""
    folder = folder or assets.bundled_model_dir()
    try:
        manifest: dict[str, Any] = json.loads((folder / "manifest.json").read_text())
    except (OSError, ValueError):
        return None
    if manifest.get("recipe") != BUILD_RECIPE:
        return None
    for variant in manifest.get("variants", {}).values():
        path = folder / variant["file"]
        if (
            _quantization_current(variant["quantization"])
            and path.is_file()
            and path.stat().st_size == variant["bytes"]
        ):
            tokenizer = folder / manifest["tokenizer"]["file"]
            artifacts = {
                "int8": {k: variant[k] for k in ("file", "bytes", "sha256")},
                "tokenizer": manifest["tokenizer"],
            }
            fields = {k: v for k, v in manifest.items() if k not in ("variants", "tokenizer")}
            chosen = fields | {"artifacts": artifacts, "quantization": variant["quantization"], "carried": str(folder)}
            return ModelFiles(folder, path, tokenizer, "int8", chosen)
    return None
