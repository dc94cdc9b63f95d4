"""A real single-node Kafka (KRaft) for development, tests and CI, resolved from Maven Central."""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time
import uuid
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from pipeline import assets
from pipeline.errors import DevKafkaError
from pipeline.ops import maven

POM = assets.kafka_pom()  # deploy/local/pom.xml, or its copy in an installed wheel
LOG_CONFIG = POM.parent / "log4j2.yaml"
CACHE_ENV = "MINNOW_KAFKA_CACHE"
HOST = "127.0.0.1"
# A modest heap; C1-only JIT and the serial collector start the broker about a third faster on a busy 2-core
# machine (measured: 5-6.5 s against 8.3 s to ready) and the test traffic never needs C2's peak throughput.
JVM_OPTIONS = ("-Xms128m", "-Xmx512m", "-XX:TieredStopAtLevel=1", "-XX:+UseSerialGC")
MIN_JAVA = 17  # Kafka 4 brokers and tools are built for Java 17
_STATE = "broker.json"

# Popen objects for brokers this process started: waiting on them (not on the raw pid) reaps the child and
# keeps Popen.__del__ from warning that the process is "still running" after stop() ended it.
_children: dict[int, subprocess.Popen[bytes]] = {}


@dataclass(frozen=True)
class SecureListeners:
    """Two more listeners for a broker that tests security: SASL_SSL (SCRAM-SHA-512 users created at format time,
    and OAUTHBEARER with unsigned test tokens) and SSL with client authentication required (mTLS). PEM files."""

    keystore: Path  # the broker's private key (PKCS#8, not encrypted) followed by its certificate chain
    truststore: Path  # the CA certificate(s) that client certificates must chain to
    scram_users: tuple[tuple[str, str], ...]  # (name, password) of each SCRAM-SHA-512 user


@dataclass(frozen=True)
class BrokerInfo:
    """Where a running local broker listens and keeps its files."""

    pid: int
    port: int
    controller_port: int
    cluster_id: str
    kafka_version: str
    run_dir: Path
    data_dir: Path
    log_file: Path
    sasl_ssl_port: int | None = None  # with SecureListeners only
    ssl_port: int | None = None

    @property
    def bootstrap_servers(self) -> str:
        return f"{HOST}:{self.port}"

    @property
    def sasl_ssl_bootstrap_servers(self) -> str:
        if self.sasl_ssl_port is None:
            raise DevKafkaError("this broker was started without secure listeners")
        return f"{HOST}:{self.sasl_ssl_port}"

    @property
    def ssl_bootstrap_servers(self) -> str:
        if self.ssl_port is None:
            raise DevKafkaError("this broker was started without secure listeners")
        return f"{HOST}:{self.ssl_port}"

    def to_json(self) -> str:
        fields = {key: str(value) if isinstance(value, Path) else value for key, value in asdict(self).items()}
        return json.dumps(fields, indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> BrokerInfo:
        raw = json.loads(text)
        return cls(
            pid=int(raw["pid"]),
            port=int(raw["port"]),
            controller_port=int(raw["controller_port"]),
            cluster_id=str(raw["cluster_id"]),
            kafka_version=str(raw["kafka_version"]),
            run_dir=Path(raw["run_dir"]),
            data_dir=Path(raw["data_dir"]),
            log_file=Path(raw["log_file"]),
            sasl_ssl_port=None if raw.get("sasl_ssl_port") is None else int(raw["sasl_ssl_port"]),
            ssl_port=None if raw.get("ssl_port") is None else int(raw["ssl_port"]),
        )


def default_cache_dir() -> Path:
    """$MINNOW_KAFKA_CACHE, else ~/.cache/minnow/kafka: outside the checkout, so fresh clones reuse the jars."""
    configured = os.environ.get(CACHE_ENV)
    return Path(configured) if configured else Path.home() / ".cache" / "minnow" / "kafka"


def resolve(cache_dir: Path) -> Path:
    """Copy the broker's jars into cache_dir/lib with Maven, once per pom version; return that folder."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    with maven.locked(cache_dir):
        return _resolve(cache_dir)


def _resolve(cache_dir: Path) -> Path:
    # A side folder swapped in (maven.fetch), so jars of two Kafka versions never share a classpath.
    return maven.fetch(
        POM, cache_dir / "lib", goal="dependency:copy-dependencies", folder_property="kafka.lib.dir", what="Kafka"
    )


def start(
    cache_dir: Path,
    port: int | None = None,
    *,
    timeout_s: float = 120.0,
    secure: SecureListeners | None = None,
    instance: str = "",
) -> BrokerInfo:
    """Start a fresh broker (new cluster id, empty data) unless one from cache_dir already runs; wait till ready.

    `instance` names a second broker sharing the jars but with its own run folder, state and ports (the secured
    test broker runs beside the plain one); `secure` adds the SASL_SSL and mTLS listeners.
    """
    cache_dir.mkdir(parents=True, exist_ok=True)
    with maven.locked(cache_dir):
        running = _read_live_state(cache_dir, instance)
        if running is not None:
            if port is not None and port != running.port:
                raise DevKafkaError(f"a local broker already runs on port {running.port}; stop it first")
            if secure is not None and running.ssl_port is None:
                raise DevKafkaError("a local broker without secure listeners runs here; stop it first")
            return running
        java = _find_java()
        lib = _resolve(cache_dir)
        info = _launch(cache_dir, java, lib, port, secure=secure, instance=instance)
        return _recorded_when_ready(cache_dir, info, instance=instance, timeout_s=timeout_s)


def restart(cache_dir: Path, info: BrokerInfo, *, instance: str = "", timeout_s: float = 120.0) -> BrokerInfo:
    """Start again a broker whose process is gone (killed, crashed) on its own run folder: the same data, cluster id
    and ports, so clients that knew it find it where it was (the fault tests kill and restart one). A broker of
    `instance` that still runs is returned as it is; wait till ready."""
    with maven.locked(cache_dir):
        running = _read_live_state(cache_dir, instance)
        if running is not None:
            return running
        restarted = replace(info, pid=_run_broker(_find_java(), _resolve(cache_dir), info.run_dir))
        return _recorded_when_ready(cache_dir, restarted, instance=instance, timeout_s=timeout_s)


def _recorded_when_ready(cache_dir: Path, info: BrokerInfo, *, instance: str, timeout_s: float) -> BrokerInfo:
    """Record a just-launched broker's state and wait till it answers; one that never does is stopped, forgotten."""
    _state_file(cache_dir, instance).write_text(info.to_json())
    try:
        _wait_ready(info, timeout_s)
    except DevKafkaError:
        _terminate(info.pid, timeout_s=10.0)
        _state_file(cache_dir, instance).unlink(missing_ok=True)
        raise
    return info


def stop(cache_dir: Path, *, timeout_s: float = 30.0, instance: str = "", forget: bool = False) -> bool:
    """SIGTERM the broker, SIGKILL it after timeout_s; forget its state. True when a broker was running.

    `forget` also removes the instance's run folder (data and logs): for throwaway brokers such as a test
    session's, whose folders would otherwise pile up."""
    if not cache_dir.is_dir():
        return False
    with maven.locked(cache_dir):
        info = _read_live_state(cache_dir, instance)
        _state_file(cache_dir, instance).unlink(missing_ok=True)
        if info is not None:
            _terminate(info.pid, timeout_s=timeout_s)
        if forget and instance:
            shutil.rmtree(_run_dir(cache_dir, instance), ignore_errors=True)
        return info is not None


def status(cache_dir: Path, *, instance: str = "") -> BrokerInfo | None:
    """The broker started from cache_dir if its process still runs; a stale state file is removed."""
    if not cache_dir.is_dir():
        return None
    with maven.locked(cache_dir):
        return _read_live_state(cache_dir, instance)


def _state_file(cache_dir: Path, instance: str) -> Path:
    return cache_dir / (f"broker-{instance}.json" if instance else _STATE)


def _run_dir(cache_dir: Path, instance: str) -> Path:
    return cache_dir / (f"run-{instance}" if instance else "run")


def _read_live_state(cache_dir: Path, instance: str = "") -> BrokerInfo | None:
    state = _state_file(cache_dir, instance)
    try:
        info = BrokerInfo.from_json(state.read_text())
    except FileNotFoundError:
        return None
    except (ValueError, KeyError):
        state.unlink(missing_ok=True)
        return None
    if _is_our_broker(info):
        return info
    state.unlink(missing_ok=True)
    return None


def _launch(
    cache_dir: Path, java: str, lib: Path, port: int | None, *, secure: SecureListeners | None, instance: str
) -> BrokerInfo:
    run_dir = _run_dir(cache_dir, instance)
    shutil.rmtree(run_dir, ignore_errors=True)
    data_dir, logs_dir = run_dir / "data", run_dir / "logs"
    data_dir.mkdir(parents=True)
    logs_dir.mkdir()
    broker_port = _check_port(port) if port is not None else _free_port()
    controller_port = _free_port(avoid=broker_port)
    secure_ports: tuple[int, int] | None = None
    if secure is not None:
        sasl_ssl_port = _free_port(avoid=broker_port, also=controller_port)
        secure_ports = (sasl_ssl_port, _free_port(avoid=broker_port, also=controller_port, besides=sasl_ssl_port))
    cluster_id = _new_cluster_id()
    properties = run_dir / "server.properties"
    text = _server_properties(broker_port, controller_port, data_dir)
    if secure is not None and secure_ports is not None:
        text = _with_secure_listeners(text, secure, *secure_ports)
    properties.write_text(text)
    fmt = [*_java(java, lib, run_dir), "kafka.tools.StorageTool", "format", "-t", cluster_id, "-c", str(properties)]
    for name, password in secure.scram_users if secure is not None else ():
        # SCRAM credentials live in the cluster metadata; a KRaft cluster takes its first ones at format time.
        fmt += ["--add-scram", f"SCRAM-SHA-512=[name={name},password={password}]"]
    done = subprocess.run(fmt, capture_output=True, text=True, timeout=120, check=False)
    if done.returncode != 0:
        output = maven.tail(done.stdout + done.stderr)
        raise DevKafkaError(f"kafka-storage format failed (exit {done.returncode}):\n{output}")
    return BrokerInfo(
        pid=_run_broker(java, lib, run_dir),
        port=broker_port,
        controller_port=controller_port,
        cluster_id=cluster_id,
        kafka_version=_kafka_version(lib),
        run_dir=run_dir,
        data_dir=data_dir,
        log_file=logs_dir / "server.log",
        sasl_ssl_port=secure_ports[0] if secure_ports else None,
        ssl_port=secure_ports[1] if secure_ports else None,
    )


def _java(java: str, lib: Path, run_dir: Path) -> list[str]:
    """The JVM and classpath of Kafka's tools and broker for a run folder (its logs go to run_dir/logs)."""
    logs = run_dir / "logs"
    return [
        java,
        *JVM_OPTIONS,
        f"-Dlog4j2.configurationFile={LOG_CONFIG}",
        f"-Dkafka.logs.dir={logs}",
        "-cp",
        str(lib / "*"),
    ]


def _run_broker(java: str, lib: Path, run_dir: Path) -> int:
    """Start the broker JVM on the run folder's server.properties (already formatted); its pid."""
    with (run_dir / "console.log").open("ab") as out:
        # A session of its own: Ctrl-C in the dev shell or pytest must not reach the broker.
        child = subprocess.Popen(
            [*_java(java, lib, run_dir), "kafka.Kafka", str(run_dir / "server.properties")],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=run_dir,
            start_new_session=True,
        )
    _children[child.pid] = child
    return child.pid


_SCRAM_LOGIN = "org.apache.kafka.common.security.scram.ScramLoginModule required;"
# Unsigned test tokens ({"alg":"none"}), checked by Kafka's default OAUTHBEARER validator; a real cluster validates
# signed tokens against its identity provider.
_OAUTH_LOGIN = (
    "org.apache.kafka.common.security.oauthbearer.OAuthBearerLoginModule required "
    'unsecuredLoginStringClaim_sub="broker";'
)


def _with_secure_listeners(text: str, secure: SecureListeners, sasl_ssl_port: int, ssl_port: int) -> str:
    """server.properties with a SASL_SSL and an mTLS listener beside PLAINTEXT (which stays the broker's own)."""
    lines = dict(line.split("=", 1) for line in text.splitlines())
    lines["listeners"] += f",SASL_SSL://{HOST}:{sasl_ssl_port},SSL://{HOST}:{ssl_port}"
    lines["advertised.listeners"] += f",SASL_SSL://{HOST}:{sasl_ssl_port},SSL://{HOST}:{ssl_port}"
    lines["listener.security.protocol.map"] += ",SASL_SSL:SASL_SSL,SSL:SSL"
    lines |= {
        "ssl.keystore.type": "PEM",
        "ssl.keystore.location": str(secure.keystore),
        "ssl.truststore.type": "PEM",
        "ssl.truststore.location": str(secure.truststore),
        "listener.name.ssl.ssl.client.auth": "required",
        "sasl.enabled.mechanisms": "SCRAM-SHA-512,OAUTHBEARER",
        "listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config": _SCRAM_LOGIN,
        "listener.name.sasl_ssl.oauthbearer.sasl.jaas.config": _OAUTH_LOGIN,
    }
    return "".join(f"{key}={value}\n" for key, value in lines.items())


def _server_properties(port: int, controller_port: int, data_dir: Path) -> str:
    settings = {
        # One JVM is both the KRaft controller and the broker.
        "process.roles": "broker,controller",
        "node.id": "1",
        "controller.quorum.voters": f"1@{HOST}:{controller_port}",
        "listeners": f"PLAINTEXT://{HOST}:{port},CONTROLLER://{HOST}:{controller_port}",
        "advertised.listeners": f"PLAINTEXT://{HOST}:{port}",
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "PLAINTEXT",
        "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
        "log.dirs": str(data_dir),
        "num.partitions": "1",
        # As in the compose stack and most production clusters: a missing topic is an error (`minnow topics apply`),
        # never a one-partition topic with default settings created by whoever wrote to it first.
        "auto.create.topics.enable": "false",
        # Internal topics default to 3 replicas, which a single node cannot place.
        "offsets.topic.replication.factor": "1",
        "transaction.state.log.replication.factor": "1",
        "transaction.state.log.min.isr": "1",
        "share.coordinator.state.topic.replication.factor": "1",
        "share.coordinator.state.topic.min.isr": "1",
        # The default 50 partitions each must load before the first group join or transaction; one is enough.
        "offsets.topic.num.partitions": "1",
        "transaction.state.log.num.partitions": "1",
        # Tests join a group and expect partitions at once, not after the default 3 s delay.
        "group.initial.rebalance.delay.ms": "0",
    }
    return "".join(f"{key}={value}\n" for key, value in settings.items())


def _wait_ready(info: BrokerInfo, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        child = _children.get(info.pid)
        if child is not None and child.poll() is not None:
            raise DevKafkaError(f"the broker exited with code {child.returncode}\n{_log_tails(info)}")
        if _broker_ready(info.port):
            return
        time.sleep(0.25)
    raise DevKafkaError(
        f"the broker did not answer on {info.bootstrap_servers} in {timeout_s:.0f}s\n{_log_tails(info)}"
    )


def _broker_ready(port: int) -> bool:
    """ApiVersions answers once the listener is up; Metadata lists the broker only once it is unfenced."""
    try:
        with socket.create_connection((HOST, port), timeout=2.0) as conn:
            versions = _api_versions(conn)
            low, high = versions.get(_METADATA, (0, -1))
            if not low <= 1 <= high:
                # A future broker without Metadata v1: a listener that negotiates versions is the best sign left.
                return bool(versions)
            payload = _request(conn, _METADATA, 1, struct.pack(">i", 0))  # v1, empty topic list
    except (OSError, struct.error):
        return False
    broker_count: int = struct.unpack_from(">i", payload, 4)[0]  # after the correlation id
    return broker_count > 0


_API_VERSIONS = 18
_METADATA = 3


def _api_versions(conn: socket.socket) -> dict[int, tuple[int, int]]:
    payload = _request(conn, _API_VERSIONS, 0, b"")
    _, error_code, count = struct.unpack_from(">ihi", payload)
    if error_code != 0:
        return {}
    entries = struct.iter_unpack(">hhh", payload[10 : 10 + 6 * count])
    return {key: (low, high) for key, low, high in entries}


def _request(conn: socket.socket, api_key: int, version: int, body: bytes) -> bytes:
    client_id = b"minnow-devkafka"
    header = struct.pack(">hhih", api_key, version, 1, len(client_id)) + client_id
    message = header + body
    conn.sendall(struct.pack(">i", len(message)) + message)
    (size,) = struct.unpack(">i", _recv_exactly(conn, 4))
    return _recv_exactly(conn, size)


def _recv_exactly(conn: socket.socket, size: int) -> bytes:
    chunks = bytearray()
    while len(chunks) < size:
        chunk = conn.recv(size - len(chunks))
        if not chunk:
            raise ConnectionError("the broker closed the connection")
        chunks += chunk
    return bytes(chunks)


def _terminate(pid: int, *, timeout_s: float) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    if _wait_exit(pid, timeout_s):
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    if not _wait_exit(pid, 10.0):
        raise DevKafkaError(f"the broker (pid {pid}) survived SIGKILL")


def _wait_exit(pid: int, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not _alive(pid):
            _children.pop(pid, None)
            return True
        time.sleep(0.1)
    return not _alive(pid)


def _alive(pid: int) -> bool:
    child = _children.get(pid)
    if child is not None:
        return child.poll() is None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A broker that another process started and has not reaped yet lingers as a zombie: it is gone.
    stat = Path(f"/proc/{pid}/stat")
    with contextlib.suppress(OSError):
        return stat.read_text().rsplit(")", 1)[1].split()[0] != "Z"
    return True


def _is_our_broker(info: BrokerInfo) -> bool:
    """Alive, and still a Kafka started with our properties: pids get reused after a reboot."""
    if not _alive(info.pid):
        return False
    cmdline = Path(f"/proc/{info.pid}/cmdline")
    if cmdline.exists():
        try:
            args = cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            return False
    else:  # macOS and other systems without /proc
        done = subprocess.run(["ps", "-o", "args=", "-p", str(info.pid)], capture_output=True, text=True, check=False)
        args = done.stdout
    return "kafka.Kafka" in args and str(info.run_dir) in args


def _find_java() -> str:
    java = shutil.which("java")
    if java is None:
        raise DevKafkaError(
            f"`java` is not on PATH; Kafka needs Java {MIN_JAVA}+ (apt-get install openjdk-17-jre-headless)"
        )
    done = subprocess.run([java, "-version"], capture_output=True, text=True, timeout=60, check=False)
    found = re.search(r'version "(\d+)(?:\.(\d+))?', done.stderr)
    if found:
        major = int(found.group(2) or 0) if found.group(1) == "1" else int(found.group(1))
        if major < MIN_JAVA:
            raise DevKafkaError(
                f"{java} is Java {major}; Kafka 4 needs Java {MIN_JAVA}+ (apt-get install openjdk-17-jre-headless)"
            )
    return java


def _kafka_version(lib: Path) -> str:
    for jar in lib.glob("kafka_2.13-*.jar"):
        return jar.name.removeprefix("kafka_2.13-").removesuffix(".jar")
    raise DevKafkaError(f"no kafka_2.13 jar in {lib}; delete {lib} and resolve again")


def _new_cluster_id() -> str:
    # Kafka's Uuid.toString: URL-safe base64 of 16 random bytes, unpadded; one that starts with '-' would be
    # read as a command-line flag, so Kafka never issues those either.
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        if not cluster_id.startswith("-"):
            return cluster_id


def _free_port(avoid: int | None = None, also: int | None = None, besides: int | None = None) -> int:
    while True:
        with socket.socket() as probe:
            probe.bind((HOST, 0))
            port = int(probe.getsockname()[1])
        if port not in (avoid, also, besides):
            return port


def _check_port(port: int) -> int:
    with socket.socket() as probe:
        try:
            probe.bind((HOST, port))
        except OSError as exc:
            raise DevKafkaError(f"port {port} on {HOST} is taken; choose another or leave it out") from exc
    return port


def _log_tails(info: BrokerInfo) -> str:
    parts = []
    for path in (info.run_dir / "console.log", info.log_file):
        text = path.read_text(errors="replace") if path.is_file() else ""
        parts.append(f"--- last lines of {path} ---\n{maven.tail(text) or '(empty)'}")
    return "\n".join(parts)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline.ops.devkafka", description=__doc__)
    parser.add_argument("command", choices=["resolve", "start", "stop", "status"])
    parser.add_argument("--cache-dir", type=Path, default=None, help=f"default: ${CACHE_ENV} or ~/.cache/minnow/kafka")
    parser.add_argument("--port", type=int, default=None, help="broker port (start only); default: a free one")
    args = parser.parse_args(argv)
    cache_dir: Path = args.cache_dir or default_cache_dir()
    try:
        if args.command == "resolve":
            print(resolve(cache_dir))
        elif args.command == "start":
            info = start(cache_dir, args.port)
            print(
                f"Kafka {info.kafka_version} ready on {info.bootstrap_servers} (pid {info.pid}, logs {info.log_file})"
            )
            # What Minnow's processes read, and what the test suite reads (tests/integration/conftest.py).
            print(
                f"export MINNOW_KAFKA__BOOTSTRAP_SERVERS={info.bootstrap_servers} "
                f"KAFKA_BOOTSTRAP_SERVERS={info.bootstrap_servers}"
            )
        elif args.command == "stop":
            print("stopped" if stop(cache_dir) else "no local broker was running")
        else:
            running = status(cache_dir)
            print(running.to_json() if running else "no local broker is running")
            return 0 if running else 3
    except DevKafkaError as exc:
        print(f"devkafka: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
