"""Start-up check of the environment: a `MINNOW_*` variable that no part of Minnow reads is reported, with the
closest known name, so a typo (MINNOW_KAFKA__BOOTSTRAP_SERVER) is not silently ignored.

pydantic-settings ignores variables it does not know (it must: the prefix is shared by the tools below), so the
known set is every setting (settings.environment_variables()), the variables read outside Settings, and the
deprecated names that are still read or that warn on their own.
"""

from __future__ import annotations

import difflib
import logging
from collections.abc import Mapping

from pipeline.settings import environment_variables

PREFIX = "MINNOW_"
# Read by name outside Settings: the local broker and registry (pipeline/ops), the tests, the log set-up.
OUTSIDE_SETTINGS = frozenset(
    {
        "MINNOW_KAFKA_CACHE",  # pipeline/ops/devkafka.py
        "MINNOW_KAFKA_IMAGE",  # tests: the broker image when MINNOW_TEST_KAFKA=container
        "MINNOW_REGISTRY_CACHE",  # pipeline/ops/devregistry.py
        "MINNOW_REGISTRY_JAVA",  # pipeline/ops/devregistry.py
        "MINNOW_LOG_FORMAT",  # log format (json|text)
        "MINNOW_LOG_LEVEL",
        "MINNOW_WHEEL_MODEL_DIR",  # setup.py: the model bundle a built wheel carries
        "MINNOW_FAMILY_PARENT_PID",  # pipeline/stream/family_processes.py: set by a worker for its family processes
    }
)
OUTSIDE_PREFIXES = ("MINNOW_TEST_",)  # the test suite's switches (MINNOW_TEST_KAFKA, MINNOW_TEST_CACHE, ...)
# Old names: read with a warning of their own, or reported as no longer read by the settings that replaced them.
DEPRECATED = frozenset(
    {
        "MINNOW_ENGINE__MAX_BATCH_SIZE",
        "MINNOW_WORKER__IOT_HALF_LIFE",
        "MINNOW_WORKER__IOT_MIN_SAMPLES",
        "MINNOW_WORKER__IOT_ZSCORE_THRESHOLD",
    }
)
log = logging.getLogger(__name__)


def known_variables() -> frozenset[str]:
    return frozenset(name for name, _, _ in environment_variables()) | OUTSIDE_SETTINGS | DEPRECATED


def unknown(environ: Mapping[str, str]) -> list[tuple[str, str | None]]:
    """(variable, closest known name or None) for every MINNOW_* variable nothing reads, sorted."""
    known = known_variables()
    found: list[tuple[str, str | None]] = []
    for name in sorted(environ):
        upper = name.upper()
        if not upper.startswith(PREFIX) or upper in known or upper.startswith(OUTSIDE_PREFIXES):
            continue
        close = difflib.get_close_matches(upper, known, n=1, cutoff=0.6)
        found.append((name, close[0] if close else None))
    return found


def report_unknown(environ: Mapping[str, str]) -> list[str]:
    """Log one warning line per unknown variable; return the lines (for tests)."""
    lines = []
    for name, close in unknown(environ):
        hint = f"; did you mean {close}?" if close else " (docs/configuration.md lists every setting)"
        lines.append(f"{name} is set but no Minnow setting has that name, so it is ignored{hint}")
        log.warning(lines[-1])
    return lines
