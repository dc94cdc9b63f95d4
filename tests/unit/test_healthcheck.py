"""The image's HEALTHCHECK asks the /healthz of the role PID 1 runs, and only that role's port."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest

from pipeline.ops import healthcheck


class _Handler(BaseHTTPRequestHandler):
    status = 200

    def do_GET(self) -> None:
        self.send_response(self.status if self.path == "/healthz" else 404)
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:  # quiet test output
        pass


@pytest.fixture
def server() -> Iterator[HTTPServer]:
    httpd = HTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield httpd
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join()


def test_the_role_is_the_subcommand_of_the_command_line() -> None:
    """The entrypoint script, `python -m pipeline.cli` and options are skipped; a later argument that happens to
    be a role's name (a topic prefix) does not count."""
    assert healthcheck.role_of(["/opt/minnow/venv/bin/python", "/opt/minnow/venv/bin/minnow", "worker"]) == "worker"
    assert healthcheck.role_of(["python", "-m", "pipeline.cli", "escalator", "--bootstrap-servers", "x"]) == (
        "escalator"
    )
    assert (
        healthcheck.role_of(["/venv/bin/python", "/venv/bin/minnow", "topics", "apply", "--prefix", "worker"]) is None
    )
    assert healthcheck.role_of(["/venv/bin/python", "/venv/bin/minnow", "review"]) is None


def test_each_role_is_asked_on_its_own_port() -> None:
    """The worker's and the escalator's port variables and defaults; port 0 (endpoints off) asks nothing."""
    argv = ["python", "/venv/bin/minnow"]
    assert healthcheck.health_url([*argv, "worker"], {}) == "http://127.0.0.1:9464/healthz"
    assert healthcheck.health_url([*argv, "escalator"], {}) == "http://127.0.0.1:9465/healthz"
    env = {"MINNOW_WORKER__METRICS_PORT": "19464", "MINNOW_ESCALATION__METRICS_PORT": "0"}
    assert healthcheck.health_url([*argv, "worker"], env) == "http://127.0.0.1:19464/healthz"
    assert healthcheck.health_url([*argv, "escalator"], env) is None
    assert healthcheck.health_url([*argv, "topics", "apply"], env) is None


def test_healthy_only_on_a_200_answer(server: HTTPServer, monkeypatch: pytest.MonkeyPatch) -> None:
    """200 passes; 503, and a port nobody listens on, fail; no endpoint passes."""
    url = f"http://127.0.0.1:{server.server_port}/healthz"
    assert healthcheck.check(url)[0]
    monkeypatch.setattr(_Handler, "status", 503)
    assert not healthcheck.check(url)[0]
    server.server_close()  # nothing listens any more
    assert not healthcheck.check(url, timeout_s=1.0)[0]
    assert healthcheck.check(None) == (True, "no health endpoint for this role")


def test_main_reads_pid_1s_command_line(server: HTTPServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """main() takes the role from a /proc/<pid>/cmdline-style file (NUL-separated) and exits 0 or 1."""
    cmdline = tmp_path / "cmdline"
    cmdline.write_bytes(b"/opt/minnow/venv/bin/python\0/opt/minnow/venv/bin/minnow\0worker\0")
    monkeypatch.setenv("MINNOW_WORKER__METRICS_PORT", str(server.server_port))
    assert healthcheck.main(cmdline) == 0
    monkeypatch.setattr(_Handler, "status", 500)
    assert healthcheck.main(cmdline) == 1
