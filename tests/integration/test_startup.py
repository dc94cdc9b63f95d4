"""Processes started before the broker answers: they wait with backoff (one log line per attempt), start work once
it answers, and give up with one line and exit 75 only after MINNOW_KAFKA__STARTUP_WAIT_S."""

from __future__ import annotations

import asyncio
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator

import pytest

from tests.integration.test_worker_e2e import (  # noqa: F401  # worker_env, workers: fixtures used by name
    OutputReader,
    WorkerProcess,
    _create_and_produce,
    _free_port,
    all_seen,
    feed,
    worker_env,
    workers,
)

pytestmark = [pytest.mark.integration, pytest.mark.faults, pytest.mark.timeout(300)]


class Forwarder:
    """A TCP relay from a port of ours to the broker, switched on when the test says: until then nothing listens
    there, as when a broker is still starting. Only the bootstrap goes through it; the broker's metadata then
    sends clients to its own address."""

    def __init__(self, port: int, target: tuple[str, int]) -> None:
        self.port, self._target = port, target
        self._server: socket.socket | None = None
        self._closing = threading.Event()

    def start(self) -> None:
        server = socket.create_server(("127.0.0.1", self.port))
        server.settimeout(0.2)
        self._server = server
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        assert self._server is not None
        while not self._closing.is_set():
            try:
                client, _ = self._server.accept()
            except TimeoutError:
                continue
            except OSError:  # closed by close()
                return
            upstream = socket.create_connection(self._target)
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for end in (source, sink):
                end.close()

    def close(self) -> None:
        self._closing.set()
        if self._server is not None:
            self._server.close()


@pytest.fixture
def forwarder(kafka_bootstrap: str) -> Iterator[Forwarder]:
    host, port = kafka_bootstrap.rsplit(":", 1)
    relay = Forwarder(_free_port(), (host, int(port)))
    yield relay
    relay.close()


def test_a_worker_started_before_the_broker_waits_then_processes_everything(
    kafka_bootstrap: str,
    worker_env: dict[str, str],  # noqa: F811  # the fixture imported above
    workers: Callable[..., WorkerProcess],  # noqa: F811
    forwarder: Forwarder,
) -> None:
    """The worker's only bootstrap address answers nothing for ~4 s: it stays up, logs each attempt with the
    address, and once the address answers it joins and every event comes out; SIGTERM then exits 0."""
    prefix = worker_env["MINNOW_KAFKA__TOPIC_PREFIX"]
    planned = [feed(n, wave="s") for n in range(12)]

    async def run() -> None:
        sent = await _create_and_produce(kafka_bootstrap, prefix, planned)
        by_place = {(s.topic, s.partition, s.offset): s for s in sent}
        expected = Counter(s.marker for s in sent)
        address = f"127.0.0.1:{forwarder.port}"
        worker = workers(MINNOW_KAFKA__BOOTSTRAP_SERVERS=address, MINNOW_KAFKA__STARTUP_WAIT_S="120")
        await asyncio.sleep(4)
        assert worker.process is not None and worker.process.poll() is None, worker.tail()
        waiting = [line for line in worker.tail(200).splitlines() if "attempt" in line]
        assert len(waiting) >= 2 and all(address in line for line in waiting), worker.tail()
        forwarder.start()
        async with OutputReader(kafka_bootstrap, prefix) as reader:
            assert await reader.read_until(all_seen(expected, by_place), timeout_s=120), worker.tail()
        assert worker.stop(signal.SIGTERM) == 0, worker.tail()
        assert "Traceback" not in worker.tail(400)

    asyncio.run(run())


@pytest.mark.parametrize("role", ["worker", "escalator"])
def test_no_broker_at_all_is_one_line_and_exit_75_after_the_wait(
    role: str,
    worker_env: dict[str, str],  # noqa: F811  # the fixture imported above
) -> None:
    """Nothing ever answers: exit 75 (a supervisor restarts it) soon after MINNOW_KAFKA__STARTUP_WAIT_S, the
    last line naming the address and the variable, no traceback."""
    address = f"127.0.0.1:{_free_port()}"
    env = {**worker_env, "MINNOW_KAFKA__BOOTSTRAP_SERVERS": address, "MINNOW_KAFKA__STARTUP_WAIT_S": "3"}
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "pipeline.cli", role], env=env, capture_output=True, text=True, timeout=120, check=False
    )
    took = time.monotonic() - started
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 75, done.stderr
    assert 3 <= took < 30, f"exited after {took:.1f} s"
    assert lines[-1].startswith(f"minnow: cannot connect to Kafka at {address} after waiting 3 s"), done.stderr
    assert "MINNOW_KAFKA__STARTUP_WAIT_S" in lines[-1] and "Traceback" not in done.stderr
