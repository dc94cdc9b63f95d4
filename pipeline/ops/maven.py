"""Fetching a local tool (the Kafka broker's jars, the schema registry's application) with Maven, once per pom.

The pom's sha256 is written into the fetched folder; a folder whose marker matches is reused as is, anything else is
fetched again into a side folder and swapped in, so files of two versions never mix. The cache folder is locked
while it changes, so two pytest sessions or a developer's shell cannot fetch (or start) the same tool at once.
"""

from __future__ import annotations

import fcntl
import hashlib
import re
import shutil
import subprocess
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from pipeline.errors import DevKafkaError

MARKER = ".resolved"
TIMEOUT_S = 900


def fetch(
    pom: Path,
    folder: Path,
    *,
    goal: str,
    folder_property: str,
    what: str,
    complete: Callable[[Path], bool] = lambda fetched: True,
) -> Path:
    """`folder`, holding what `mvn <goal>` puts at `-D<folder_property>=...` for `pom` (fetched only when the pom
    changed); a DevKafkaError that names `what` when Maven is missing, fails, or leaves `complete` false."""
    wanted = hashlib.sha256(pom.read_bytes()).hexdigest()
    marker = folder / MARKER
    if marker.is_file() and marker.read_text().strip() == wanted:
        return folder
    mvn = shutil.which("mvn")
    if mvn is None:
        raise DevKafkaError("`mvn` is not on PATH; install Maven 3.8+ (apt-get install maven)")
    partial = folder.with_name(folder.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    # Maven runs on a copy: the pom may sit in a read-only site-packages (an installed wheel's pipeline/_assets).
    work = folder.with_name(folder.name + ".pom")
    work.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(pom, work / "pom.xml")
    command = [
        mvn, "-B", "-q", "-f", str(work / "pom.xml"),
        f"-Dmaven.repo.local={folder.parent / 'm2'}",
        f"-D{folder_property}={partial}",
        goal,
    ]  # fmt: skip
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired as exc:
        raise DevKafkaError(f"Maven did not resolve {what} within {TIMEOUT_S // 60} minutes") from exc
    if done.returncode != 0 or not complete(partial):
        raise DevKafkaError(
            f"Maven could not resolve {what} (exit {done.returncode}):\n{tail(done.stdout + done.stderr)}"
        )
    (partial / MARKER).write_text(wanted + "\n")
    shutil.rmtree(folder, ignore_errors=True)
    partial.rename(folder)
    return folder


@contextmanager
def locked(cache_dir: Path) -> Iterator[None]:
    """Hold cache_dir's lock file (cache_dir must exist)."""
    with (cache_dir / ".lock").open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def tail(text: str, lines: int = 40) -> str:
    """The last lines of a tool's output, without colour codes (Debian's Maven 3.8 writes them even in batch mode;
    they would garble the error message)."""
    plain = re.sub(r"\x1b\[[0-9;]*m", "", text)
    return "\n".join(plain.splitlines()[-lines:])
