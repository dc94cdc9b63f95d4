"""The core (engine, stages, tasks) imports neither faust nor aiokafka."""

from __future__ import annotations

import subprocess
import sys


def test_importing_the_core_does_not_import_kafka_libraries() -> None:
    code = (
        "import sys, pipeline.engine, pipeline.stages.infer, pipeline.stages.validate, pipeline.tasks.classify;"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in {'faust', 'aiokafka', 'kafka'});"
        "print(','.join(bad))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


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
