"""Adds to the wheel what lives outside the package in a checkout; everything else is in pyproject.toml.

topics/ and the local Kafka / schema-registry poms are copied to pipeline/_assets/, and the ONNX model bundle
(made by `minnow models bundle`, what `make wheel` runs first) when one is staged at build/model-bundle/ or at
$MINNOW_WHEEL_MODEL_DIR. pipeline/assets.py finds them in both layouts (docs/packaging.md).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent
LOCAL = ("pom.xml", "log4j2.yaml", "registry/pom.xml")


class BuildWithAssets(build_py):
    def run(self) -> None:
        super().run()
        if getattr(self, "editable_mode", False):
            return  # an editable install reads the checkout itself
        assets = Path(self.build_lib) / "pipeline" / "_assets"
        shutil.rmtree(assets, ignore_errors=True)
        shutil.copytree(ROOT / "topics", assets / "topics")
        for name in LOCAL:
            (assets / "local" / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / "deploy" / "local" / name, assets / "local" / name)
        model = Path(os.environ.get("MINNOW_WHEEL_MODEL_DIR") or ROOT / "build" / "model-bundle")
        if (model / "manifest.json").is_file():
            shutil.copytree(model, assets / "model")


setup(cmdclass={"build_py": BuildWithAssets})
