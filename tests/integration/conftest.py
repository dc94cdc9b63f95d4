"""Integration fixtures: one real Kafka per session (given, testcontainers, or the local Maven broker)."""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Callable, Iterator
from urllib.parse import urlsplit

import pytest

from pipeline.ops import devkafka
from tests.integration.secure import SecureBroker, start_secure_broker

BOOTSTRAP_ENV = "KAFKA_BOOTSTRAP_SERVERS"
# Opt-in only: CI runs a Docker engine for the image and compose tests, but no registry is reachable there, so a
# Docker engine answering is no sign that a Kafka image can be pulled.
BROKER_KIND_ENV = "MINNOW_TEST_KAFKA"
# Confluent images are what testcontainers' KafkaContainer drives (it edits their start scripts);
# MINNOW_KAFKA_IMAGE picks another tag.
CONTAINER_IMAGE = os.environ.get("MINNOW_KAFKA_IMAGE", "confluentinc/cp-kafka:7.9.0")
DOCKER_PING_TIMEOUT_S = 2.0


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    """host:port of a real broker: $KAFKA_BOOTSTRAP_SERVERS, else a testcontainers broker when asked for
    (MINNOW_TEST_KAFKA=container), else the local Maven-resolved broker."""
    configured = os.environ.get(BOOTSTRAP_ENV)
    if configured:
        yield configured
    elif os.environ.get(BROKER_KIND_ENV) == "container":
        if not _docker_answers():
            pytest.fail(f"{BROKER_KIND_ENV}=container but no Docker engine answers at $DOCKER_HOST; start one")
        yield from _container_broker()
    else:
        yield from _local_broker()


@pytest.fixture(scope="session")
def secure_kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecureBroker]:
    """A second local broker with SASL_SSL (SCRAM-SHA-512, OAUTHBEARER) and mTLS listeners and a throwaway CA; the
    plain broker the other tests use is not touched. Always the local Maven broker: its listeners are ours to set."""
    yield from start_secure_broker(tmp_path_factory.mktemp("secure-kafka"))


@pytest.fixture
def random_name() -> Callable[[str], str]:
    """Fresh topic, group and transactional ids, so tests never see each other's records or offsets."""

    def make(purpose: str) -> str:
        return f"minnow-it-{purpose}-{uuid.uuid4().hex[:12]}"

    return make


def _docker_answers() -> bool:
    """GET /_ping on the engine testcontainers would use ($DOCKER_HOST, else the default socket)."""
    # Not docker-py's ping: when nothing listens it leaks its socket, and the ResourceWarning fails the run.
    host = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
    parsed = urlsplit(host)
    try:
        if parsed.scheme == "unix":
            conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            conn.settimeout(DOCKER_PING_TIMEOUT_S)
            try:
                conn.connect(parsed.path)
            except OSError:
                conn.close()
                raise
        elif parsed.scheme == "tcp" and parsed.hostname and parsed.port:
            conn = socket.create_connection((parsed.hostname, parsed.port), timeout=DOCKER_PING_TIMEOUT_S)
        else:  # ssh:// or TLS engines: let a developer point KAFKA_BOOTSTRAP_SERVERS at a broker instead
            return False
        with conn:
            conn.sendall(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")
            reply = conn.recv(256)
    except OSError:
        return False
    return reply.startswith(b"HTTP/1.") and b" 200 " in reply.split(b"\r\n", 1)[0]


def _container_broker() -> Iterator[str]:
    try:
        from testcontainers.community.kafka import KafkaContainer
    except ImportError:  # testcontainers before the `community` package
        from testcontainers.kafka import KafkaContainer

    container = KafkaContainer(CONTAINER_IMAGE).with_kraft()
    # A first start on a 2-core machine can take longer than the 30 s default.
    container.start(timeout=180)
    try:
        yield container.get_bootstrap_server()
    finally:
        container.stop()


def _local_broker() -> Iterator[str]:
    cache_dir = devkafka.default_cache_dir()
    running = devkafka.status(cache_dir)
    if running is not None:
        # A developer's `minnow dev kafka start` broker: use it, leave it running.
        yield running.bootstrap_servers
        return
    # This session's own broker (own run folder and ports), so a second pytest session running at the same time
    # never has its broker stopped by this one's teardown, nor stops this one's.
    instance = f"pytest-{os.getpid()}"
    info = devkafka.start(cache_dir, instance=instance)
    try:
        yield info.bootstrap_servers
    finally:
        devkafka.stop(cache_dir, instance=instance, forget=True)
