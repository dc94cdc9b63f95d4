"""Where the files Minnow reads beside its code are: the checkout's top-level folders, or their copies in a wheel.

A checkout keeps `topics/` and `deploy/local/` at the top level (the design card's layout); a wheel cannot install
files outside its packages, so setup.py copies them to `pipeline/_assets/` when it builds one, with the ONNX model
built for it (docs/packaging.md). The checkout wins when the package is imported from one (an editable install or
PYTHONPATH); otherwise the packaged copy is used.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

CHECKOUT = Path(__file__).resolve().parents[1]
PACKAGED = "_assets"


def in_checkout() -> bool:
    """Imported from a source tree (its pyproject.toml and topics/ beside the package), not from site-packages."""
    return (CHECKOUT / "pyproject.toml").is_file() and (CHECKOUT / "topics").is_dir()


def packaged(*parts: str) -> Path:
    """A file or folder under pipeline/_assets/ of an installed wheel (it may not exist: a checkout has none)."""
    return Path(str(resources.files("pipeline").joinpath(PACKAGED, *parts)))


def locate(checkout: str, *inside_wheel: str) -> Path:
    """`checkout` (relative to the repository root) in a checkout, else pipeline/_assets/<inside_wheel...>."""
    return CHECKOUT / checkout if in_checkout() else packaged(*inside_wheel)


def topics_dir() -> Path:
    """The topic specs and their JSON Schemas (topics/)."""
    return locate("topics", "topics")


def kafka_pom() -> Path:
    """The pom that resolves the local development broker (deploy/local/pom.xml)."""
    return locate("deploy/local/pom.xml", "local", "pom.xml")


def registry_pom() -> Path:
    """The pom that resolves the local schema registry (deploy/local/registry/pom.xml)."""
    return locate("deploy/local/registry/pom.xml", "local", "registry", "pom.xml")


def bundled_model_dir() -> Path:
    """The ONNX model a wheel carries (built by `make wheel`); absent in a checkout."""
    return packaged("model")
