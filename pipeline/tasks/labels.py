"""Label sets per event family, read from YAML (see docs/labels.md)."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from pipeline.config_files import read_yaml
from pipeline.errors import ConfigError


class Label(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(min_length=1)
    description: str = Field(min_length=1)
    # Other wordings of the description; each is embedded on its own and averaged with it (prompt ensembling).
    paraphrases: list[str] = Field(default_factory=list)
    examples: list[str] = Field(default_factory=list)

    @field_validator("paraphrases")
    @classmethod
    def _no_blank_paraphrases(cls, texts: list[str]) -> list[str]:
        if any(not t.strip() for t in texts):
            raise ValueError("paraphrases must not be blank")
        return texts


class LabelSet(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    description: str = ""
    labels: list[Label] = Field(min_length=2)

    @field_validator("labels")
    @classmethod
    def _unique(cls, labels: list[Label]) -> list[Label]:
        names = [label.name for label in labels]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"duplicate label names: {', '.join(duplicates)}")
        return labels

    @property
    def names(self) -> list[str]:
        return [label.name for label in self.labels]


def bundled_labels_path() -> Path:
    return Path(str(resources.files("pipeline") / "data" / "labels.yaml"))


def load_label_sets(path: Path | None = None) -> dict[str, LabelSet]:
    """Label sets keyed by family (feed, transcript, iot); the bundled file when `path` is None."""
    path = path or bundled_labels_path()
    raw = read_yaml(path, "label file")
    if not isinstance(raw, dict) or not isinstance(raw.get("label_sets"), dict):
        raise ConfigError(f"label file {path} must have a top-level 'label_sets:' mapping of family -> label set")
    sets: dict[str, LabelSet] = {}
    for family, body in raw["label_sets"].items():
        try:
            sets[str(family)] = LabelSet.model_validate({"name": str(family), **(body or {})})
        except (ValidationError, TypeError) as exc:
            raise ConfigError(f"label set '{family}' in {path} is invalid: {exc}") from exc
    return sets
