"""The one place Kafka clients are built: every aiokafka consumer, producer and admin client, and the faust app,
from `KafkaSettings` (address and security), so a new setting reaches every process at once; and the first
connection, whose failure is reported as one line that names the cause (docs/connect.md)."""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Collection, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.abc import AbstractTokenProvider
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

from pipeline.errors import ConfigError, StreamToolError
from pipeline.logs import register_secrets
from pipeline.settings import KafkaSettings
from pipeline.stream import stable_offsets

if TYPE_CHECKING:
    import faust
    from faust.types.auth import CredentialsT

log = logging.getLogger(__name__)

# Every producer that writes Minnow's outputs: the broker's max.message.bytes (per topic) is the real limit. The
# producer must not refuse a large dead letter or escalation on its own, or an oversize input record would stop a
# worker on every restart.
PRODUCER_MAX_REQUEST_BYTES = 16 * 1024 * 1024


class KafkaRecord(Protocol):
    """The fields of an aiokafka ConsumerRecord that `tail` and `review` read."""

    topic: str
    partition: int
    offset: int
    timestamp: int
    key: bytes | None
    value: bytes | None
    headers: Sequence[tuple[str, bytes]]


# ------------------------------------------------------------------------------------------------ security
def ssl_context(kafka: KafkaSettings) -> ssl.SSLContext | None:
    """The TLS context of SSL and SASL_SSL (None otherwise): the CA file or the system CAs, the client certificate
    for mTLS; a file that cannot be loaded is a ConfigError naming the variable."""
    if not kafka.uses_tls:
        return None
    try:
        context = ssl.create_default_context(cafile=str(kafka.ssl_cafile) if kafka.ssl_cafile else None)
    except (ssl.SSLError, OSError) as exc:
        raise ConfigError(f"MINNOW_KAFKA__SSL_CAFILE {kafka.ssl_cafile} is not a PEM CA certificate: {exc}") from exc
    context.check_hostname = kafka.ssl_check_hostname  # verification of the chain stays on either way
    if kafka.ssl_certfile is not None:
        password = kafka.ssl_key_password.get_secret_value() if kafka.ssl_key_password else None
        try:
            context.load_cert_chain(str(kafka.ssl_certfile), str(kafka.ssl_keyfile), password=password)
        except (ssl.SSLError, OSError) as exc:
            raise ConfigError(
                f"cannot load the client certificate MINNOW_KAFKA__SSL_CERTFILE {kafka.ssl_certfile} with key "
                f"MINNOW_KAFKA__SSL_KEYFILE {kafka.ssl_keyfile}: {exc}; check that the key belongs to the "
                "certificate and MINNOW_KAFKA__SSL_KEY_PASSWORD if the key is encrypted"
            ) from exc
    return context


class FileTokenProvider(AbstractTokenProvider):  # type: ignore[misc]  # aiokafka ships no type hints
    """OAUTHBEARER: the token in a file (a sidecar or a mounted secret keeps it fresh), read again when it changes."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._seen: tuple[int, int] | None = None
        self._token = ""

    async def token(self) -> str:
        try:
            stat = self._path.stat()
            if (stat.st_mtime_ns, stat.st_size) != self._seen:
                self._token = self._path.read_text(encoding="utf-8").strip()
                register_secrets([self._token])  # masked in every log line (pipeline/logs.py)
                self._seen = (stat.st_mtime_ns, stat.st_size)
        except OSError as exc:
            raise ConfigError(f"cannot read MINNOW_KAFKA__SASL_OAUTH_TOKEN_FILE {self._path}: {exc.strerror}") from exc
        if not self._token:
            raise ConfigError(f"MINNOW_KAFKA__SASL_OAUTH_TOKEN_FILE {self._path} is empty")
        return self._token


def security_options(kafka: KafkaSettings) -> dict[str, Any]:
    """aiokafka's keyword arguments for the configured protocol (security_protocol, ssl_context, sasl_*)."""
    options: dict[str, Any] = {"security_protocol": kafka.security_protocol}
    if kafka.uses_tls:
        options["ssl_context"] = ssl_context(kafka)
    if kafka.uses_sasl:
        options["sasl_mechanism"] = kafka.sasl_mechanism
        if kafka.sasl_mechanism == "OAUTHBEARER":
            assert kafka.sasl_oauth_token_file is not None  # the settings validator requires it
            options["sasl_oauth_token_provider"] = FileTokenProvider(kafka.sasl_oauth_token_file)
        else:
            options["sasl_plain_username"] = kafka.sasl_username
            options["sasl_plain_password"] = kafka.password()
    return options


def broker_credentials(kafka: KafkaSettings) -> CredentialsT | None:
    """faust's `broker_credentials`: it hands them to every client it makes (the group consumer, the producer, the
    transactional producers and the table/changelog consumers; faust/transport/drivers/aiokafka.py)."""
    import faust
    from faust.auth import OAuthCredentials

    context = ssl_context(kafka)
    if kafka.security_protocol == "SSL":
        return faust.SSLCredentials(context)
    if not kafka.uses_sasl:
        return None
    # faust picks SASL_SSL over SASL_PLAINTEXT by whether an ssl_context is given.
    if kafka.sasl_mechanism == "OAUTHBEARER":
        assert kafka.sasl_oauth_token_file is not None
        return OAuthCredentials(oauth_cb=FileTokenProvider(kafka.sasl_oauth_token_file), ssl_context=context)
    return faust.SASLCredentials(
        username=kafka.sasl_username, password=kafka.password(), mechanism=kafka.sasl_mechanism, ssl_context=context
    )


# ------------------------------------------------------------------------------------------------ clients
def consumer(kafka: KafkaSettings, *topics: str, **options: Any) -> AIOKafkaConsumer:
    """An aiokafka consumer of `kafka`'s cluster; `options` are aiokafka's (group_id, isolation_level, ...). Its group
    reads committed offsets only once they are stable (`stable_offsets`)."""
    stable_offsets.install(kafka.stable_offsets_wait_s)
    return AIOKafkaConsumer(*topics, bootstrap_servers=kafka.bootstrap_servers, **security_options(kafka), **options)


def delivery_options(kafka: KafkaSettings) -> dict[str, Any]:
    """What every Minnow producer promises (docs/connect.md, "What each delivery setting guarantees"): a record is
    acknowledged once all in-sync replicas have it, and a retried send never writes it twice."""
    return {"acks": "all", "enable_idempotence": kafka.enable_idempotence}


def producer(kafka: KafkaSettings, **options: Any) -> AIOKafkaProducer:
    """An aiokafka producer of `kafka`'s cluster with `delivery_options`; `options` are aiokafka's (linger_ms, ...)."""
    return AIOKafkaProducer(
        bootstrap_servers=kafka.bootstrap_servers, **security_options(kafka), **{**delivery_options(kafka), **options}
    )


def admin(kafka: KafkaSettings, **options: Any) -> AIOKafkaAdminClient:
    """An aiokafka admin client of `kafka`'s cluster."""
    return AIOKafkaAdminClient(bootstrap_servers=kafka.bootstrap_servers, **security_options(kafka), **options)


def broker_urls(bootstrap_servers: str) -> list[str]:
    """`host:port,host:port` as faust's broker URLs."""
    return [f"kafka://{server.strip()}" for server in bootstrap_servers.split(",") if server.strip()]


def faust_app(kafka: KafkaSettings, **conf: Any) -> faust.App:
    """The faust app of `kafka`'s cluster: its id is the consumer group, its credentials reach every client, and
    its producers make the same delivery promise as every other Minnow producer (`delivery_options`)."""
    from pipeline.stream.faust_delivery import DeliveryApp

    # faust's consumer is aiokafka's: a restarted exactly-once worker waits for offsets a transaction still holds
    stable_offsets.install(kafka.stable_offsets_wait_s)
    return DeliveryApp(
        kafka.group_id,
        broker=broker_urls(kafka.bootstrap_servers),
        broker_credentials=broker_credentials(kafka),
        delivery=delivery_options(kafka),
        **conf,
    )


class _Client(Protocol):
    async def start(self) -> None: ...


ClientT = TypeVar("ClientT", bound=_Client)


async def started(client: ClientT, kafka: KafkaSettings) -> ClientT:
    """The aiokafka client, started after the cluster answered a first connection (`preflight`, once per process);
    a failure is a StreamToolError naming the cause."""
    from pipeline.stream.preflight import preflight  # it builds its connection from this module

    # First, not after a failed start: aiokafka would log its own "Unable connect" lines before the one that counts.
    await preflight(kafka)
    try:
        async with asyncio.timeout(kafka.connect_timeout_s):
            await client.start()
    except (KafkaError, OSError, TimeoutError) as exc:
        running: Any = client
        await (running.stop() if hasattr(running, "stop") else running.close())  # the admin client has close()
        raise StreamToolError(f"cannot reach Kafka at {where(kafka)}: {exc or type(exc).__name__}") from exc
    return client


async def topic_partitions(client: AIOKafkaAdminClient, topics: Collection[str]) -> dict[str, list[int]]:
    """The partition numbers of each of `topics` that exists; missing topics are left out."""
    # Metadata for all topics, not for the named ones: naming a missing topic can make the broker create it.
    described = await client.describe_topics()
    wanted = set(topics)
    return {
        str(entry["topic"]): sorted(int(part["partition"]) for part in entry["partitions"])
        for entry in described
        if entry["topic"] in wanted and entry["error_code"] == 0
    }


async def partitions(kafka: KafkaSettings, topic: str) -> list[int]:
    """The topic's partitions; a missing topic is an error, not something for the broker to auto-create."""
    client = await started(admin(kafka), kafka)
    try:
        known = await topic_partitions(client, [topic])
    except KafkaError as exc:
        raise StreamToolError(f"cannot reach Kafka at {where(kafka)}: {exc}") from exc
    finally:
        await client.close()
    if topic not in known:
        raise StreamToolError(f"topic {topic!r} does not exist on {kafka.bootstrap_servers}; create it first")
    return known[topic]


def where(kafka: KafkaSettings) -> str:
    """The cluster as messages name it: its address, and its protocol when that is not plain."""
    if kafka.security_protocol == "PLAINTEXT":
        return kafka.bootstrap_servers
    mechanism = f" {kafka.sasl_mechanism}" if kafka.uses_sasl else ""
    return f"{kafka.bootstrap_servers} ({kafka.security_protocol}{mechanism})"
