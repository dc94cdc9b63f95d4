"""The import arrows point one way: the core knows no Kafka and no outer layer; the streaming layer knows no command.

Read from the source with `ast`, so an import inside a function (deferred for start-up time) counts as well.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "pipeline"

# Kafka-free: plain functions over models. They may import each other, never the layers around them.
CORE = ("engine", "stages", "tasks", "review", "escalation", "models.py", "training.py", "topic_specs.py")
CORE_MUST_NOT_IMPORT = (
    "faust",
    "aiokafka",
    "kafka",
    "pipeline.stream",
    "pipeline.ops",
    "pipeline.bench",
    "pipeline.commands",
    "pipeline.cli",
)
# The streaming runtime: Kafka clients and agents. Commands, operations tools and benchmarks build on it.
STREAM = ("stream",)
STREAM_MUST_NOT_IMPORT = ("pipeline.commands", "pipeline.ops", "pipeline.bench", "pipeline.cli")


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(source: str, module: str, *, is_package: bool = False) -> Iterator[str]:
    """Every module named by an import statement of `source` (relative imports resolved against `module`)."""
    package = module if is_package else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            yield base
            # `from pipeline import stream` names the module pipeline.stream
            yield from (f"{base}.{alias.name}" for alias in node.names)


def violations(paths: Iterator[Path], forbidden: tuple[str, ...]) -> list[str]:
    found = []
    for path in paths:
        name = module_name(path)
        source = path.read_text(encoding="utf-8")
        for imported in imported_modules(source, name, is_package=path.name == "__init__.py"):
            if any(imported == f or imported.startswith(f + ".") for f in forbidden):
                found.append(f"{name} imports {imported}")
    return sorted(set(found))


def modules_of(*places: str) -> Iterator[Path]:
    for place in places:
        target = PACKAGE / place
        yield from sorted(target.rglob("*.py")) if target.is_dir() else [target]


def test_the_core_imports_no_kafka_library_and_no_outer_layer() -> None:
    """engine, stages, tasks, review, escalation, models, training and topic specs stay Kafka-free and innermost."""
    assert len(list(modules_of(*CORE))) >= 40
    assert violations(modules_of(*CORE), CORE_MUST_NOT_IMPORT) == []


def test_the_streaming_layer_imports_no_command_tool_or_benchmark() -> None:
    assert len(list(modules_of(*STREAM))) >= 15
    assert violations(modules_of(*STREAM), STREAM_MUST_NOT_IMPORT) == []


@pytest.mark.parametrize(
    ("source", "module", "expected"),
    [
        ("import aiokafka.admin", "pipeline.stages.route", "aiokafka.admin"),
        ("from pipeline.commands.train import fit_heads", "pipeline.stream.labels", "pipeline.commands.train"),
        ("from pipeline import ops", "pipeline.tasks.classify", "pipeline.ops"),
        ("def f():\n    from ..stream import names", "pipeline.engine.encoder", "pipeline.stream.names"),
        ("from . import commands", "pipeline.cli", "pipeline.commands"),
    ],
)
def test_the_checker_sees_every_form_of_import(source: str, module: str, expected: str) -> None:
    """Absolute, `from package import module`, deferred and relative imports are all caught."""
    assert expected in set(imported_modules(source, module))
