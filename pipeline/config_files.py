"""Read the YAML configuration files (labels, bounds, moderation, topic specs); failures become ConfigError."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from pipeline.errors import ConfigError


def read_yaml(path: Path, what: str) -> Any:
    """The parsed document; `what` names the file's role in the error ("label file", "topic spec")."""
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read {what} {path}: {exc}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"{what} {path} is not valid YAML: {exc}") from exc
