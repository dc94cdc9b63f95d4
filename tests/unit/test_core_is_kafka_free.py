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
