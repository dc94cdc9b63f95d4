"""The int8 model a wheel carries: built once per quantization mode when the wheel is built, picked at run time.

The int8 graph depends on the CPU (pipeline/engine/quantize.py, choose_mode: s8 weights where the CPU has an int8
dot product, u8 weights and two fp32 projections where it has not), so a wheel that must run anywhere carries one
graph per mode, with the tokenizer and a manifest; `carried()` returns the one for this CPU. Building needs the
weights and onnx (the `build` extra); using it needs neither. `make wheel` runs `minnow models bundle`.

A bundle may carry one mode only (the container image's `INT8_MODES` build argument, docs/deploy.md): the u8 graph
is the portable one (u8 x u8 products never saturate, so it is exact on every CPU; a CPU with an int8 dot product
runs it, only slower than its own graph), while the dot graph is wrong on a CPU without the dot product (u8 x s8
pairs saturate in AVX2's vpmaddubsw), so a dot-only bundle there is refused with a message, never run.
"""

from __future__ import annotations

import json
import logging
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
from pipeline.errors import ModelError

log = logging.getLogger(__name__)

MODES = {"dot": ("avx512_vnni",), "u8": ("avx2",)}  # a CPU flag set that selects each mode in choose_mode
PORTABLE = "u8"  # the mode whose graph is exact on every CPU (module docstring)


def _art(path: Path) -> dict[str, Any]:
    return {"file": path.name, "bytes": path.stat().st_size, "sha256": _sha256(path)}


def make(cache_dir: Path, out: Path, modes: tuple[str, ...] = tuple(MODES)) -> dict[str, Any]:
    """Write the bundle to `out`: the tokenizer and an int8 graph for each of `modes` (names of MODES; default all),
    the cache's own where it fits (built first if stale), the others quantized from its fp32 graph."""
    import onnx

    from pipeline.engine.quantize import build_static_int8, choose_mode

    unknown = [m for m in modes if m not in MODES]
    if unknown or not modes:
        raise ModelError(f"unknown int8 mode {', '.join(unknown) or '(none)'}: choose from {', '.join(MODES)}")
    manifest = build(cache_dir)
    source = artifact_dir(cache_dir)
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    tokenizer = out / "tokenizer.json"
    shutil.copyfile(source / manifest["artifacts"]["tokenizer"]["file"], tokenizer)
    variants: dict[str, Any] = {}
    for name in dict.fromkeys(modes):
        flags = MODES[name]
        target = out / f"encoder-int8-{name}.onnx"
        mode = choose_mode(flags)
        native = manifest["quantization"]
        if _same_mode(native, mode.manifest()):
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
    """The carried int8 model for this CPU, or None (a checkout, a wheel built without one, another recipe).

    This CPU's own mode first; else the portable u8 graph (exact everywhere). A bundle whose only graphs are for a
    mode this CPU cannot run exactly raises ModelError: building one here would need the weights, which an image
    or an installed wheel does not have."""
    from pipeline.engine import quantize

    folder = folder or assets.bundled_model_dir()
    try:
        manifest: dict[str, Any] = json.loads((folder / "manifest.json").read_text())
    except (OSError, ValueError):
        return None
    if manifest.get("recipe") != BUILD_RECIPE:
        return None
    present = {
        name: variant
        for name, variant in manifest.get("variants", {}).items()
        if (folder / variant["file"]).is_file() and (folder / variant["file"]).stat().st_size == variant["bytes"]
    }
    flags = quantize.cpu_flags()
    for wanted in (flags, ()):  # this CPU's mode; then the portable one, which every CPU runs exactly
        for variant in present.values():
            if _quantization_current(variant["quantization"], wanted):
                if wanted != flags:
                    log.info("only the portable u8 int8 graph is carried: running it (slower on this CPU)")
                return _files(folder, manifest, variant)
    portable = quantize.choose_mode(()).manifest()
    cpu_is_portable = _same_mode(quantize.choose_mode(flags).manifest(), portable)
    if present and cpu_is_portable and not any(_same_mode(v["quantization"], portable) for v in present.values()):
        raise ModelError(
            f"the bundled int8 model has the graph for {', '.join(present)} only (CPUs with an int8 dot product), "
            f"which this CPU ({' '.join(flags) or 'no AVX2/VNNI flags read'}) computes wrong: use the portable image "
            "(INT8_MODES=u8, the default) or a wheel that carries every mode (docs/deploy.md)"
        )
    return None


def _same_mode(recorded: dict[str, Any], wanted: dict[str, Any]) -> bool:
    return all(recorded.get(k) == v for k, v in wanted.items() if k != "cpu_flags")


def _files(folder: Path, manifest: dict[str, Any], variant: dict[str, Any]) -> ModelFiles:
    tokenizer = folder / manifest["tokenizer"]["file"]
    artifacts = {"int8": {k: variant[k] for k in ("file", "bytes", "sha256")}, "tokenizer": manifest["tokenizer"]}
    fields = {k: v for k, v in manifest.items() if k not in ("variants", "tokenizer")}
    chosen = fields | {"artifacts": artifacts, "quantization": variant["quantization"], "carried": str(folder)}
    return ModelFiles(folder, folder / variant["file"], tokenizer, "int8", chosen)
