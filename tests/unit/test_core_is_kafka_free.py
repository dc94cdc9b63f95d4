"""The core (engine, stages, tasks) imports neither faust nor aiokafka."""

from __future__ import annotations

import subprocess
import sys


def test_importing_the_core_does_not_import_kafka_libraries() -> None:
    """Every module of the engine, the stages (assemble and devices included), the tasks and review is Kafka-free."""
    code = (
        "import sys, pkgutil, importlib;"
        "import pipeline.engine as e, pipeline.stages as s, pipeline.tasks as t, pipeline.review as r;"
        "names = sorted(m.name for p in (e, s, t, r) for m in pkgutil.iter_modules(p.__path__, p.__name__ + '.'));"
        "[importlib.import_module(n) for n in names];"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in {'faust', 'aiokafka', 'kafka'});"
        "print(len(names), ','.join(bad))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    count, _, bad = out.stdout.strip().partition(" ")
    assert int(count) >= 20 and bad == ""


def test_importing_the_escalation_tier_does_not_import_kafka_libraries() -> None:
    """Every module of pipeline.escalation (client, limits, breaker, cache, budget, tasks, escalator) is Kafka-free."""
    code = (
        "import sys, pkgutil, importlib, pipeline.escalation as p;"
        "names = sorted(m.name for m in pkgutil.iter_modules(p.__path__, 'pipeline.escalation.'));"
        "[importlib.import_module(n) for n in names];"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in {'faust', 'aiokafka', 'kafka'});"
        "print(len(names), ','.join(bad))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    count, _, bad = out.stdout.strip().partition(" ")
    assert int(count) >= 9 and bad == ""


def test_training_and_topic_specs_do_not_import_kafka_libraries() -> None:
    """Labeled data, head fitting, topic specs and schema generation run without a Kafka client library."""
    code = (
        "import sys, pipeline.training, pipeline.topic_specs, pipeline.commands.train;"
        "pipeline.topic_specs.check_schemas();"
        "print(','.join(sorted(m for m in sys.modules if m.split('.')[0] in {'faust', 'aiokafka', 'kafka'})))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
