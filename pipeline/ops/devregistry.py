"""A real schema registry (Apicurio, in-memory) for development and tests, resolved from Maven Central.

Apicurio Registry serves the Confluent-compatible API at /apis/ccompat/v7, which is all Minnow uses
(pipeline/stream/registry.py). Its server is published as a Quarkus application archive; Maven unpacks it
(deploy/local/registry/pom.xml) and `java -jar quarkus-run.jar` runs it. Storage is in memory: a restarted
registry has forgotten every schema, which is what tests want. `python -m pipeline.ops.devregistry start`.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from pipeline import assets
from pipeline.errors import DevKafkaError
from pipeline.ops import maven

POM = assets.registry_pom()  # deploy/local/registry/pom.xml, or its copy in an installed wheel
CACHE_ENV = "MINNOW_REGISTRY_CACHE"
JAVA_ENV = "MINNOW_REGISTRY_JAVA"
HOST = "127.0.0.1"
CCOMPAT_PATH = "/apis/ccompat/v7"
MIN_JAVA = 21  # Apicurio 3.x classes are built for Java 21
# A modest heap and C1-only JIT, as for the local broker: the registry serves a handful of requests per test.
JVM_OPTIONS = ("-Xms64m", "-Xmx512m", "-XX:TieredStopAtLevel=1", "-XX:+UseSerialGC")
_STATE = "registry.json"


@dataclass(frozen=True)
class RegistryInfo:
    """Where a running local registry listens."""

    pid: int
    port: int
    log_file: Path

    @property
    def url(self) -> str:
        """The Confluent-compatible API's base URL: MINNOW_REGISTRY__URL."""
        return f"http://{HOST}:{self.port}{CCOMPAT_PATH}"


# Popen objects of registries this process started: stopping one through its Popen reaps it, and keeps
# Popen.__del__ from warning that a process is "still running" (the tests turn warnings into errors).
_children: dict[int, subprocess.Popen[bytes]] = {}


def default_cache_dir() -> Path:
    """$MINNOW_REGISTRY_CACHE, else ~/.cache/minnow/registry."""
    configured = os.environ.get(CACHE_ENV)
    return Path(configured) if configured else Path.home() / ".cache" / "minnow" / "registry"


def resolve(cache_dir: Path) -> Path:
    """Unpack the registry's application into cache_dir/app with Maven, once per pom version; return it."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    with maven.locked(cache_dir):
        return _resolve(cache_dir)


def _resolve(cache_dir: Path) -> Path:
    return maven.fetch(
        POM,
        cache_dir / "app",
        goal="dependency:unpack",
        folder_property="registry.app.dir",
        what="the schema registry",
        complete=lambda app: (app / "quarkus-run.jar").is_file(),
    )


def start(cache_dir: Path, port: int | None = None, *, timeout_s: float = 120.0, instance: str = "") -> RegistryInfo:
    """Start a registry with empty storage unless one from cache_dir already runs; wait until it answers.

    `instance` names another registry sharing the unpacked application but with its own state and log (each test
    session runs its own, so one session's teardown never stops another's)."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    with maven.locked(cache_dir):
        running = _read_live_state(cache_dir, instance)
        if running is not None:
            return running
        java = find_java()
        app = _resolve(cache_dir)
        chosen = port if port is not None else _free_port()
        log_file = cache_dir / (f"registry-{instance}.log" if instance else "registry.log")
        command = [
            java, *JVM_OPTIONS,
            f"-Dquarkus.http.port={chosen}", f"-Dquarkus.http.host={HOST}",
            "-Dquarkus.log.level=WARN",
            "-jar", str(app / "quarkus-run.jar"),
        ]  # fmt: skip
        with log_file.open("wb") as log:
            process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=app, start_new_session=True)
        _children[process.pid] = process
        info = RegistryInfo(pid=process.pid, port=chosen, log_file=log_file)
        state = _state_file(cache_dir, instance)
        state.write_text(json.dumps({"pid": info.pid, "port": info.port, "log_file": str(log_file)}))
        try:
            _wait_ready(info, process, timeout_s)
        except DevKafkaError:
            _terminate(info.pid)
            state.unlink(missing_ok=True)
            raise
        return info


def stop(cache_dir: Path, *, instance: str = "") -> bool:
    """Stop the registry started from cache_dir; True when one was running."""
    if not cache_dir.is_dir():
        return False
    with maven.locked(cache_dir):
        info = _read_live_state(cache_dir, instance)
        _state_file(cache_dir, instance).unlink(missing_ok=True)
        if info is not None:
            _terminate(info.pid)
        if instance:  # a throwaway instance (a test session's): its log would otherwise pile up
            (cache_dir / f"registry-{instance}.log").unlink(missing_ok=True)
        return info is not None


def status(cache_dir: Path, *, instance: str = "") -> RegistryInfo | None:
    if not cache_dir.is_dir():
        return None
    with maven.locked(cache_dir):
        return _read_live_state(cache_dir, instance)


def find_java() -> str:
    """A Java of at least MIN_JAVA: $MINNOW_REGISTRY_JAVA, $JAVA_HOME, `java` on PATH, then /usr/lib/jvm/*."""
    candidates = [os.environ.get(JAVA_ENV, "")]
    if os.environ.get("JAVA_HOME"):
        candidates.append(str(Path(os.environ["JAVA_HOME"]) / "bin" / "java"))
    candidates.append(shutil.which("java") or "")
    candidates.extend(str(path) for path in sorted(Path("/usr/lib/jvm").glob("*/bin/java")))
    seen: list[str] = []
    for candidate in candidates:
        if candidate and candidate not in seen and Path(candidate).is_file():
            seen.append(candidate)
            if _java_major(candidate) >= MIN_JAVA:
                return candidate
    raise DevKafkaError(
        f"the schema registry needs Java {MIN_JAVA}+ (found {', '.join(seen) or 'none'}); "
        f"install one (apt-get install openjdk-21-jre-headless) or set {JAVA_ENV}"
    )


def _java_major(java: str) -> int:
    try:
        done = subprocess.run([java, "-version"], capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return 0
    match = re.search(r'version "(\d+)(?:\.(\d+))?', done.stderr + done.stdout)
    if match is None:
        return 0
    major = int(match.group(1))
    return int(match.group(2) or 0) if major == 1 else major


def ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/subjects", timeout=2) as response:  # our own loopback URL
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def _wait_ready(info: RegistryInfo, process: subprocess.Popen[bytes], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            tail = "\n".join(info.log_file.read_text(errors="replace").splitlines()[-20:])
            raise DevKafkaError(f"the schema registry exited with {process.returncode}:\n{tail}")
        if ready(info.url):
            return
        time.sleep(0.5)
    raise DevKafkaError(f"the schema registry did not answer within {timeout_s:.0f}s (log: {info.log_file})")


def _state_file(cache_dir: Path, instance: str) -> Path:
    return cache_dir / (f"registry-{instance}.json" if instance else _STATE)


def _read_live_state(cache_dir: Path, instance: str = "") -> RegistryInfo | None:
    state = _state_file(cache_dir, instance)
    try:
        raw = json.loads(state.read_text())
        info = RegistryInfo(pid=int(raw["pid"]), port=int(raw["port"]), log_file=Path(raw["log_file"]))
    except FileNotFoundError:
        return None
    except (ValueError, KeyError):
        state.unlink(missing_ok=True)
        return None
    if _alive(info.pid) and ready(info.url):
        return info
    state.unlink(missing_ok=True)
    return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _terminate(pid: int, timeout_s: float = 20.0) -> None:
    child = _children.pop(pid, None)
    if child is not None:  # started by this process: stop and reap it through its Popen
        child.terminate()
        try:
            child.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait(timeout=10)
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with contextlib.suppress(ChildProcessError):
            if os.waitpid(pid, os.WNOHANG)[0] == pid:  # our child: reap it
                return
        if not _alive(pid):
            return
        time.sleep(0.2)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline.ops.devregistry", description=__doc__)
    parser.add_argument("action", choices=["resolve", "start", "stop", "status"])
    parser.add_argument("--port", type=int, default=None)
    parser.add_argument("--cache-dir", type=Path, default=None)
    args = parser.parse_args(argv)
    cache_dir = args.cache_dir or default_cache_dir()
    try:
        if args.action == "resolve":
            print(resolve(cache_dir))
        elif args.action == "start":
            info = start(cache_dir, args.port)
            print(f"schema registry at {info.url} (pid {info.pid}); export MINNOW_REGISTRY__URL={info.url}")
        elif args.action == "stop":
            print("stopped" if stop(cache_dir) else "not running")
        else:
            running = status(cache_dir)
            print(f"running at {running.url} (pid {running.pid})" if running else "not running")
            return 0 if running else 3
    except DevKafkaError as exc:
        print(f"devregistry: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
