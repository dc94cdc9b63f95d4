"""The alert rules pass `promtool check rules`, and their unit tests (deploy/prometheus/alerts_test.yaml) pass
`promtool test rules`: each rule fires where it should and stays quiet where it should."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from tests.observability import ALERT_TESTS, ALERTS

pytestmark = pytest.mark.integration

PROMTOOL_TIMEOUT_S = 120


def promtool() -> str:
    """promtool's path; the test fails (one line) where it is missing, since CI must run these checks."""
    found = shutil.which("promtool")
    if found is None:
        pytest.fail("promtool not found: install Prometheus (Debian: apt-get install prometheus)", pytrace=False)
    return found


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [promtool(), *args], capture_output=True, text=True, timeout=PROMTOOL_TIMEOUT_S, cwd=ALERTS.parent, check=False
    )


def test_promtool_checks_the_alert_rules() -> None:
    """Syntax, PromQL and templates of every rule are valid for Prometheus."""
    done = run("check", "rules", ALERTS.name)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


def test_promtool_runs_the_alert_unit_tests() -> None:
    """Every case of alerts_test.yaml: the expected alerts, labels and annotations, and none where none is due."""
    done = run("test", "rules", ALERT_TESTS.name)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout
