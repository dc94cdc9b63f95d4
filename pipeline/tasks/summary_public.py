"""The public dialogue sets the summary model is fitted and measured on: readers for `../shared/data/dialogue`, and
one fixed split of each file into a fitting part and a held-out part.

Nothing here is needed at load time: the worker reads the shipped weights (pipeline/data/summary_model.json). This
module serves `summary_train` and `summary_public_eval`, which take the data folder as an argument; the files are
never copied into the project (docs/summarization.md, "Public data").
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pipeline.errors import ConfigError

Part = Literal["fit", "held_out"]
HELD_OUT_SHARE = 0.4  # of each file, chosen by a hash of the dialogue's id: the same rows on every machine
# "Name: text" on one line; a name is short and has no colon (a first name in SAMSum, "#Person1#" in DialogSum).
_TURN = re.compile(r"^\s*([^:\n]{1,40}?)\s*:\s?(.*)$")


@dataclass(frozen=True)
class PublicSet:
    name: str  # "samsum" | "dialogsum"
    file: str  # relative to the data folder
    dialogue_key: str
    summary_key: str
    id_key: str | None  # None: the line number is the id


SETS = (
    PublicSet("samsum", "dialogue/samsum_validation.jsonl", "context", "response", None),
    PublicSet("dialogsum", "dialogue/dialogsum_dev.jsonl", "dialogue", "summary", "fname"),
)


def parse_turns(dialogue: str) -> list[dict[str, str]]:
    """ "Name: text" lines as {"speaker", "text"} turns; a line without a name continues the turn before it."""
    turns: list[dict[str, str]] = []
    for line in dialogue.replace("\r\n", "\n").replace("\r", "\n").split("\n"):
        if not line.strip():
            continue
        match = _TURN.match(line)
        if match:
            turns.append({"speaker": match.group(1).strip(), "text": match.group(2).strip()})
        elif turns:
            turns[-1]["text"] = f"{turns[-1]['text']} {line.strip()}"
        else:
            turns.append({"speaker": "", "text": line.strip()})
    return turns


def part_of(dialogue_id: str) -> Part:
    """The fixed split: a stable hash of the id, so adding rows never moves the old ones."""
    digest = hashlib.sha256(dialogue_id.encode("utf-8")).digest()
    return "held_out" if digest[0] / 256 < HELD_OUT_SHARE else "fit"


def read_set(data_dir: Path, spec: PublicSet, part: Part | None) -> list[dict[str, Any]]:
    """The set's dialogues as {"id", "turns", "summary"} records (the shape `summary_eval` embeds), one part or all."""
    path = data_dir / spec.file
    if not path.is_file():
        raise ConfigError(f"{path} not found: pass --data-dir pointing at the shared data folder (its README.md)")
    records = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines()):
        if not line.strip():
            continue
        row = json.loads(line)
        dialogue_id = f"{spec.name}-{row[spec.id_key] if spec.id_key else n}"
        turns = parse_turns(row[spec.dialogue_key])
        if part is not None and part_of(dialogue_id) != part:
            continue
        if turns and row[spec.summary_key].strip():
            records.append({"id": dialogue_id, "turns": turns, "summary": row[spec.summary_key].strip()})
    return records
