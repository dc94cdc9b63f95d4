"""`minnow embed`: {"id", "text"} lines in, {"id", "embedding"} lines out, one per input line, in order."""

from __future__ import annotations

import sys
from typing import IO

import orjson

from pipeline.engine import load_encoder
from pipeline.jsonl import batched, dump, numbered_lines, open_input, progress
from pipeline.models import ErrorRecord
from pipeline.settings import Settings


def _text_of(raw: bytes, line: int) -> tuple[str, str] | ErrorRecord:
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        return ErrorRecord(error="decode_error", message=f"not valid JSON or UTF-8: {exc}", line=line)
    if not isinstance(obj, dict) or not isinstance(obj.get("text"), str):
        return ErrorRecord(error="schema_error", message='each line needs {"id": ..., "text": "..."}', line=line)
    ident = obj.get("id")
    return (str(ident) if ident is not None else str(line)), obj["text"]


def run(settings: Settings, path: str | None, out: IO[bytes], *, batch_size: int) -> int:
    encoder = load_encoder(settings.engine)
    errors = 0
    with open_input(path) as (stream, size), progress(size, "embed") as bar:
        for batch in batched(numbered_lines(stream), batch_size):
            parsed = [_text_of(raw, line) for line, raw in batch]
            good = [p for p in parsed if not isinstance(p, ErrorRecord)]
            vectors = iter(encoder.embed([text for _, text in good]))
            for item in parsed:
                if isinstance(item, ErrorRecord):
                    errors += 1
                    out.write(dump(item))
                else:
                    out.write(dump({"id": item[0], "embedding": next(vectors).tolist()}))
            bar.update(sum(len(raw) + 1 for _, raw in batch))
    out.flush()
    if errors:
        print(f"{errors} lines could not be embedded; see their error records", file=sys.stderr)
    return 0
