"""The health server answers real HTTP on its bound port, and lag is high watermark minus committed, floored at 0."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import Callable, Iterator

import pytest
from aiohttp import ClientSession
from prometheus_client import CONTENT_TYPE_LATEST

from pipeline.metrics import EVENTS_IN, PARTITIONS_ASSIGNED
from pipeline.stream.health import (
    HealthServer,
    lag_by_partition,
    partitions_assigned,
    start_health_server,
)


@pytest.fixture(autouse=True)
def _no_partitions() -> Iterator[None]:
    """Each test starts (and leaves the process) with no partitions assigned; the gauge is process-wide."""
    PARTITIONS_ASSIGNED.set(0)
    yield
    PARTITIONS_ASSIGNED.set(0)


async def _get(server: HealthServer, path: str) -> tuple[int, str, str]:
    async with ClientSession() as session, session.get(f"http://127.0.0.1:{server.port}{path}") as reply:
        return reply.status, reply.headers["Content-Type"], await reply.text()


def _serve_and_get(paths: list[str], ready: Callable[[], bool] | None = None) -> list[tuple[int, str, str]]:
    async def scenario() -> list[tuple[int, str, str]]:
        async with await start_health_server(0, ready, host="127.0.0.1") as server:
            assert server.port > 0
            return [await _get(server, path) for path in paths]

    return asyncio.run(scenario())


def test_metrics_serves_the_minnow_instruments_in_prometheus_text_format() -> None:
    EVENTS_IN.labels(topic="minnow.health-test.in", family="feed").inc(3)
    [(status, content_type, body)] = _serve_and_get(["/metrics"])
    assert status == 200
    assert content_type == CONTENT_TYPE_LATEST
    assert "# TYPE minnow_events_in_total counter" in body
    assert 'minnow_events_in_total{family="feed",topic="minnow.health-test.in"} 3.0' in body


def test_healthz_is_200_while_the_loop_answers() -> None:
    [(status, _, body)] = _serve_and_get(["/healthz"])
    assert status == 200
    assert json.loads(body)["status"] == "alive"


def test_readyz_follows_the_partitions_assigned_gauge_by_default() -> None:
    async def scenario() -> list[tuple[int, dict[str, object]]]:
        async with await start_health_server(0, host="127.0.0.1") as server:
            replies = []
            for assigned in (0, 3, 0):
                PARTITIONS_ASSIGNED.set(assigned)
                status, _, body = await _get(server, "/readyz")
                replies.append((status, json.loads(body)))
            return replies

    before, during, after = asyncio.run(scenario())
    assert before[0] == 503 and before[1]["ready"] is False and before[1]["partitions_assigned"] == 0
    assert "no input partitions" in str(before[1]["reason"])
    assert during == (200, {"ready": True, "partitions_assigned": 3})
    assert after[0] == 503


def test_readyz_uses_the_given_check_and_reports_a_failing_one_as_not_ready() -> None:
    def broken() -> bool:
        raise RuntimeError("consumer not started")

    [(yes, _, _)] = _serve_and_get(["/readyz"], ready=lambda: True)
    [(no, _, no_body)] = _serve_and_get(["/readyz"], ready=lambda: False)
    [(failed, _, failed_body)] = _serve_and_get(["/readyz"], ready=broken)
    assert yes == 200, "a custom check overrides the partition gauge (which is 0 here)"
    assert no == 503 and json.loads(no_body)["reason"] == "the worker's readiness check reports not ready"
    assert failed == 503
    assert json.loads(failed_body)["reason"] == "readiness check failed: RuntimeError: consumer not started"


def test_unknown_paths_are_404() -> None:
    [(status, _, _)] = _serve_and_get(["/nope"])
    assert status == 404


def test_close_releases_the_port_and_is_idempotent() -> None:
    async def scenario() -> int:
        server = await start_health_server(0, host="127.0.0.1")
        await server.close()
        await server.close()
        return server.port

    port = asyncio.run(scenario())
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", port))  # raises EADDRINUSE if the server still held it
        assert probe.getsockname()[1] == port


def test_a_taken_port_is_an_error_not_a_silent_second_server() -> None:
    async def scenario() -> None:
        async with await start_health_server(0, host="127.0.0.1") as first:
            await start_health_server(first.port, host="127.0.0.1")

    with pytest.raises(OSError, match="address already in use"):
        asyncio.run(scenario())


def test_partitions_assigned_reads_the_gauge() -> None:
    PARTITIONS_ASSIGNED.set(5)
    assert partitions_assigned() == 5


def test_lag_is_high_watermark_minus_committed_offset() -> None:
    end = {("in", 0): 100, ("in", 1): 40, ("in", 2): 7}
    committed: dict[tuple[str, int], int | None] = {("in", 0): 60, ("in", 1): 40, ("in", 2): 0}
    assert lag_by_partition(end, committed) == {("in", 0): 40, ("in", 1): 0, ("in", 2): 7}


def test_uncommitted_partitions_count_from_the_first_retained_offset() -> None:
    """No commit (None or -1) or a commit retention already deleted both mean: everything still retained."""
    end = {("in", 0): 50, ("in", 1): 50, ("in", 2): 50, ("in", 3): 50}
    committed: dict[tuple[str, int], int | None] = {("in", 0): None, ("in", 1): -1, ("in", 2): 5, ("in", 3): 45}
    beginning = {("in", 0): 10, ("in", 1): 0, ("in", 2): 20, ("in", 3): 20}
    assert lag_by_partition(end, committed, beginning) == {("in", 0): 40, ("in", 1): 50, ("in", 2): 30, ("in", 3): 5}


def test_lag_is_never_negative() -> None:
    """A commit can momentarily pass the high watermark a follower reports; lag then reads 0, not -3."""
    assert lag_by_partition({("in", 0): 10}, {("in", 0): 13}) == {("in", 0): 0}
