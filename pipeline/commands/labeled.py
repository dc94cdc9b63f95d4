"""Read labeled JSON lines for `minnow train` and `minnow eval`."""

from __future__ import annotations

from pathlib import Path

import orjson
from pydantic import BaseModel, ConfigDict, ValidationError

from pipeline.errors import ConfigError


class LabeledRow(BaseModel):
    """One labeled example. Only the fields present are evaluated."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    id: str | None = None
    family: str = "feed"
    text: str = ""
    label: str | None = None
    categories: list[str] | None = None  # moderation truth: the categories that apply ([] = benign)
    turns: list[dict[str, str]] | None = None  # a dialogue: [{"speaker", "text"}]
    summary: str | None = None  # the reference summary of `turns`


def read_labeled(path: Path) -> list[LabeledRow]:
    rows: list[LabeledRow] = []
    try:
        lines = path.read_bytes().splitlines()
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc}") from exc
    for number, raw in enumerate(lines, start=1):
        if not raw.strip():
            continue
        try:
            rows.append(LabeledRow.model_validate(orjson.loads(raw)))
        except (orjson.JSONDecodeError, ValidationError) as exc:
            raise ConfigError(f'{path}:{number}: not a labeled example ({{"family", "text", "label"}}): {exc}') from exc
    if not rows:
        raise ConfigError(f"{path} has no labeled examples")
    return rows
