"""scripts/image_prune.py, which slims the image's virtualenv: it removes what no role runs and keeps the rest."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[2]


def _prune() -> ModuleType:
    spec = importlib.util.spec_from_file_location("image_prune", ROOT / "scripts" / "image_prune.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["image_prune"] = module
    spec.loader.exec_module(module)
    return module


def test_unused_files_are_tests_stubs_sources_and_tools_only(tmp_path: Path) -> None:
    """Package test suites, stubs, C sources, ONNX Runtime's tools and C API library, numpy's build tools and the
    activate scripts are picked; modules, the Python binding, data and the commands are not."""
    prune = _prune()
    venv = tmp_path / "venv"
    site = venv / "lib" / "python3.11" / "site-packages"
    files = {
        "numpy/__init__.py": False,
        "numpy/_core/__init__.py": False,
        "numpy/_core/tests/test_umath.py": True,
        "numpy/_core/include/numpy/ndarraytypes.h": True,
        "numpy/f2py/__init__.py": True,
        "numpy/random/lib/libnpyrandom.a": True,
        "numpy/typing/__init__.py": False,
        "onnxruntime/__init__.py": False,
        "onnxruntime/capi/onnxruntime_pybind11_state.cpython-311-x86_64-linux-gnu.so": False,
        "onnxruntime/capi/libonnxruntime.so.1.32.0": True,
        "onnxruntime/capi/libonnxruntime_providers_shared.so": False,
        "onnxruntime/quantization/quantize.py": True,
        "onnxruntime/tools/symbolic_shape_infer.py": True,
        "fastavro/__init__.py": False,
        "fastavro/_read.pyx": True,
        "fastavro/_read.pyi": True,
        "pipeline/__init__.py": False,
        "pipeline/_assets/model/encoder-int8-u8.onnx": False,
        "pipeline/data/labels.yaml": False,
        "py3langid/data/model.npz.xz": False,
    }
    for name in files:
        (site / name).parent.mkdir(parents=True, exist_ok=True)
        (site / name).write_bytes(b"x")
    bins = {"minnow": False, "python": False, "activate": True, "activate.fish": True, "Activate.ps1": True}
    for name in bins:
        (venv / "bin").mkdir(parents=True, exist_ok=True)
        (venv / "bin" / name).write_bytes(b"x")
    unused = {str(p.relative_to(site)) if p.is_relative_to(site) else p.name for p in prune.unused_files(venv, site)}
    inside = {p for p in unused if "/" in p}
    # a picked folder stands for its files
    picked = {name for name in files if any(name == u or name.startswith(u + "/") for u in inside)}
    assert picked == {name for name, gone in files.items() if gone}
    assert unused - inside == {name for name, gone in bins.items() if gone}
