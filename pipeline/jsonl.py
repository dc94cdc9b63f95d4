"""JSON-lines input and output for the CLI: numbered raw lines in, one orjson line out per item."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import orjson
from pydantic import BaseModel

from pipeline.codec import encode


@contextmanager
def open_input(path: str | None) -> Iterator[tuple[IO[bytes], int | None]]:
    """The byte stream to read and its size when known (for a progress bar); '-' or None is stdin."""
    if path in (None, "-"):
        stream = sys.stdin.buffer
        try:
            size = os.fstat(stream.fileno()).st_size if Path(f"/proc/self/fd/{stream.fileno()}").is_file() else None
        except (OSError, ValueError):
            size = None
        yield stream, size or None
        return
    p = Path(path)
    with p.open("rb") as stream:
        yield stream, p.stat().st_size


def numbered_lines(stream: IO[bytes]) -> Iterator[tuple[int, bytes]]:
    """(1-based line number, raw line without newline); blank lines are skipped but still counted."""
    for number, line in enumerate(stream, start=1):
        raw = line.rstrip(b"\r\n")
        if raw.strip():
            yield number, raw


def batched(items: Iterable[tuple[int, bytes]], size: int) -> Iterator[list[tuple[int, bytes]]]:
    batch: list[tuple[int, bytes]] = []
    for item in items:
        batch.append(item)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def dump(obj: BaseModel | dict[str, Any]) -> bytes:
    """One output line; a model is written as the stream writes it (nulls included), so it loads back."""
    if isinstance(obj, BaseModel):
        return encode(obj) + b"\n"
    return orjson.dumps(obj, option=orjson.OPT_SERIALIZE_NUMPY) + b"\n"


@contextmanager
def progress(total_bytes: int | None, desc: str, enabled: bool = True) -> Iterator[Any]:
    """A byte-based tqdm bar on stderr when reading a file of known size; a no-op otherwise."""
    from tqdm import tqdm

    show = enabled and total_bytes is not None and total_bytes > 0
    with tqdm(
        total=total_bytes, unit="B", unit_scale=True, desc=desc, disable=not show, file=sys.stderr, leave=True
    ) as bar:
        yield bar
