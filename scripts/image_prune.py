"""Slim the container image's virtualenv once the wheel is installed in it (the Dockerfile's `build` stage;
docs/deploy.md, "The image"; docs/benchmarks.md, "Container image" has what each step saves).

What leaves is what no role (worker, escalator, review, topics apply, the health check) runs: test suites, type
stubs and C sources inside packages, ONNX Runtime's model tools and C API library, numpy's build tools, the
debugging symbols of extension modules, the venv's activate scripts. And the compiled bytecode of every module that
starting the roles and loading the model does not import: those modules are still there as source and compile in
memory when something imports them (the worker runs non-root and cannot write a .pyc), so start-up stays as fast
as with every .pyc while the image carries a fraction of them.

Usage (with the venv's own python): python scripts/image_prune.py /opt/minnow/venv
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import sysconfig
from collections.abc import Iterable
from pathlib import Path

# Folders inside packages that hold their own test suites.
TEST_DIRS = ("tests",)
# Type stubs, C/Cython sources and headers, static libraries: for building against a package, not running it.
BUILD_SUFFIXES = (".pyi", ".h", ".c", ".cpp", ".pyx", ".pxd", ".a")
# Relative to site-packages.
UNUSED = (
    # model conversion, quantization and benchmarking tools (the model is built in the `bundle` stage)
    "onnxruntime/transformers",
    "onnxruntime/quantization",
    "onnxruntime/tools",
    # ONNX Runtime's C API library, for C/C++ callers: the Python binding (onnxruntime_pybind11_state) has the
    # runtime compiled in and does not load it (no DT_NEEDED entry; the image test runs the model without it)
    "onnxruntime/capi/libonnxruntime.so.*",
    # numpy's build tools
    "numpy/distutils",
    "numpy/f2py",
    "numpy/_pyinstaller",
    "jsonschema/benchmarks",
)
# Relative to the venv: shell activation (nobody activates the image's venv; PATH has its bin) and the commands
# of the tools removed above.
UNUSED_IN_VENV = ("bin/Activate.ps1", "bin/activate", "bin/activate.*", "bin/f2py", "bin/numpy-config",
                  "bin/onnxruntime_test")  # fmt: skip

# What starting each role imports, and the model load (tests/unit/test_packaging.py imports the same); run in a
# fresh interpreter, it prints the bytecode paths of every module it loaded.
STARTS = """
import json, sys, tempfile
from pathlib import Path
import pipeline.cli, pipeline.logs, pipeline.ops.healthcheck, pipeline.ops.topics
import pipeline.stream.app, pipeline.stream.escalator, pipeline.stream.review
from pipeline.errors import ModelError
from pipeline.settings import EngineSettings, Settings
from pipeline.stages.infer import MiniModel
try:
    MiniModel.load(Settings(engine=EngineSettings(cache_dir=Path(tempfile.mkdtemp()))))
except ModelError as e:  # an image for another CPU than the build machine's (INT8_MODES=dot on AVX2)
    print(f"model not loaded here ({e}); its modules are imported", file=sys.stderr)
print(json.dumps(sorted({m.__cached__ for m in list(sys.modules.values()) if getattr(m, "__cached__", None)})))
"""


def size(path: Path) -> int:
    if path.is_symlink() or path.is_file():
        return path.lstat().st_size
    return sum(p.lstat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


def remove(paths: Iterable[Path]) -> int:
    """Delete files and folders; the bytes freed."""
    freed = 0
    for path in paths:
        if not (path.exists() or path.is_symlink()):
            continue
        freed += size(path)
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()
    return freed


def unused_files(venv: Path, site: Path) -> list[Path]:
    found = [p for pattern in UNUSED for p in site.glob(pattern)]
    found += [p for pattern in UNUSED_IN_VENV for p in venv.glob(pattern)]
    found += [p for name in TEST_DIRS for p in site.rglob(name) if p.is_dir() and (p.parent / "__init__.py").exists()]
    found += [p for p in site.rglob("*") if p.suffix in BUILD_SUFFIXES and p.is_file()]
    return sorted(set(found))


def strip_extensions(site: Path) -> int:
    """`strip --strip-unneeded` the extension modules, as Debian strips its own; the libraries auditwheel grafted
    into `*.libs/` folders (patched with patchelf, already stripped) are left as they are."""
    strip = shutil.which("strip")
    if strip is None:
        raise SystemExit("image_prune: `strip` not found (the build stage installs binutils)")
    modules = [p for p in site.rglob("*.so") if p.is_file() and not any(q.name.endswith(".libs") for q in p.parents)]
    before = sum(p.stat().st_size for p in modules)
    subprocess.run([strip, "--strip-unneeded", *map(str, modules)], check=True)
    return before - sum(p.stat().st_size for p in modules)


def unimported_bytecode(site: Path) -> list[Path]:
    """The .pyc files in site-packages of modules that starting the roles does not import."""
    out = subprocess.run([sys.executable, "-c", STARTS], capture_output=True, text=True, check=True)
    loaded = {Path(p).resolve() for p in json.loads(out.stdout)}
    if not any(p.is_relative_to(site.resolve()) for p in loaded):
        raise SystemExit("image_prune: starting the roles imported nothing from site-packages; is this the venv?")
    return [p for p in site.rglob("*.pyc") if p.resolve() not in loaded]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("venv", type=Path, help="the virtualenv to slim (run this with its python)")
    args = parser.parse_args(argv)
    venv: Path = args.venv
    site = Path(sysconfig.get_paths(vars={"base": str(venv), "platbase": str(venv)})["purelib"])
    if not site.is_dir() or not Path(sys.prefix).resolve() == venv.resolve():
        raise SystemExit(f"image_prune: run it with {venv}/bin/python (site-packages {site})")
    total = size(venv)
    steps = {
        "unused files": remove(unused_files(venv, site)),
        "extension symbols": strip_extensions(site),
        "bytecode of modules no role imports at start": remove(unimported_bytecode(site)),
    }
    remove(p for p in site.rglob("__pycache__") if p.is_dir() and not any(p.iterdir()))
    for step, freed in steps.items():
        print(f"image_prune: {step}: -{freed / 1e6:.1f} MB")
    print(f"image_prune: {venv} {total / 1e6:.1f} MB -> {size(venv) / 1e6:.1f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
