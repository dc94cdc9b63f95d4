"""Kafka security without a broker: the settings refuse what cannot work with a message saying what to set, the one
client factory turns them into aiokafka's and faust's arguments, nothing else builds a client, and a failed first
connection is explained in words (the broker side is tests/integration/test_secure.py)."""

from __future__ import annotations

import asyncio
import logging
import os
import re
import socket
import ssl
import subprocess
import time
from pathlib import Path
from typing import Any

import faust
import pytest
from aiokafka import errors
from pydantic import SecretStr

from pipeline.errors import BrokerUnavailableError, ConfigError, StreamToolError
from pipeline.settings import KafkaSettings, load_settings
from pipeline.stream import clients
from pipeline.stream.preflight import explain, preflight

PIPELINE = Path(__file__).resolve().parents[2] / "pipeline"
K = "MINNOW_KAFKA__"


@pytest.fixture(scope="module")
def pem(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A self-signed certificate and its key (openssl CLI), as CA file and as client certificate."""
    folder = tmp_path_factory.mktemp("pem")
    key, cert = folder / "key.pem", folder / "cert.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
         "-days", "1", "-subj", "/CN=minnow-unit"],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    return {"key": key, "cert": cert}


def _load(monkeypatch: pytest.MonkeyPatch, **env: str) -> str:
    """The ConfigError message load_settings gives for these MINNOW_KAFKA__* variables."""
    for name in [n for n in os.environ if n.startswith(K)]:
        monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(K + name, value)
    with pytest.raises(ConfigError) as caught:
        load_settings()
    return str(caught.value)


# ------------------------------------------------------------------------------------------------ settings
def test_sasl_ssl_without_a_username_says_which_variable_to_set(monkeypatch: pytest.MonkeyPatch) -> None:
    """The issue's own example: SASL_SSL + SCRAM without a user names MINNOW_KAFKA__SASL_USERNAME."""
    message = _load(monkeypatch, SECURITY_PROTOCOL="SASL_SSL", SASL_MECHANISM="SCRAM-SHA-512", SASL_PASSWORD="x")
    expected = f"{K}SECURITY_PROTOCOL=SASL_SSL with SCRAM-SHA-512 needs {K}SASL_USERNAME"
    assert message == f"invalid settings: {expected}"


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"SECURITY_PROTOCOL": "SASL_SSL"}, "needs MINNOW_KAFKA__SASL_MECHANISM"),
        (
            {"SECURITY_PROTOCOL": "SASL_SSL", "SASL_MECHANISM": "PLAIN", "SASL_USERNAME": "u"},
            "needs MINNOW_KAFKA__SASL_PASSWORD or MINNOW_KAFKA__SASL_PASSWORD_FILE",
        ),
        (
            {"SECURITY_PROTOCOL": "SASL_SSL", "SASL_MECHANISM": "OAUTHBEARER"},
            "OAUTHBEARER needs MINNOW_KAFKA__SASL_OAUTH_TOKEN_FILE",
        ),
        ({"SASL_USERNAME": "u"}, "SASL_USERNAME is set but MINNOW_KAFKA__SECURITY_PROTOCOL is PLAINTEXT"),
        ({"SSL_CAFILE": "/etc/hosts"}, "SSL_CAFILE is set but MINNOW_KAFKA__SECURITY_PROTOCOL is PLAINTEXT"),
        ({"SECURITY_PROTOCOL": "SSL", "SSL_CAFILE": "/no/such/ca.pem"}, "SSL_CAFILE: /no/such/ca.pem does not exist"),
        ({"SECURITY_PROTOCOL": "SASL_SSL", "SASL_MECHANISM": "GSSAPI"}, "MINNOW_KAFKA__SASL_MECHANISM"),
        ({"SECURITY_PROTOCOL": "TLS"}, "MINNOW_KAFKA__SECURITY_PROTOCOL"),
    ],
)
def test_security_settings_that_cannot_work_are_refused_at_start_up(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], expected: str
) -> None:
    """Each impossible combination is a ConfigError naming the variable to fix."""
    assert expected in _load(monkeypatch, **env)


def test_a_certificate_without_its_key_is_refused(monkeypatch: pytest.MonkeyPatch, pem: dict[str, Path]) -> None:
    """mTLS needs both halves; the message says the key may be the same file."""
    message = _load(monkeypatch, SECURITY_PROTOCOL="SSL", SSL_CERTFILE=str(pem["cert"]))
    assert "MINNOW_KAFKA__SSL_CERTFILE needs MINNOW_KAFKA__SSL_KEYFILE" in message and "same file" in message


def test_the_password_file_is_read_and_its_value_is_never_printed(tmp_path: Path) -> None:
    """SASL_PASSWORD_FILE (a mounted Kubernetes secret) is read at connect time, trailing newline dropped; a
    password given directly is a SecretStr, hidden in repr."""
    secret = tmp_path / "password"
    secret.write_text("s3cret\n")
    kafka = KafkaSettings(
        security_protocol="SASL_SSL", sasl_mechanism="SCRAM-SHA-256", sasl_username="u", sasl_password_file=secret
    )
    assert kafka.password() == "s3cret"
    direct = KafkaSettings(
        security_protocol="SASL_PLAINTEXT",
        sasl_mechanism="PLAIN",
        sasl_username="u",
        sasl_password=SecretStr("hunter2"),
    )
    assert direct.password() == "hunter2" and "hunter2" not in repr(direct)


def test_environment_gives_a_child_process_the_same_settings(tmp_path: Path, pem: dict[str, Path]) -> None:
    """What the demo hands its worker reads back as equal settings, secrets included."""
    kafka = KafkaSettings(
        bootstrap_servers="b:9093",
        security_protocol="SASL_SSL",
        sasl_mechanism="SCRAM-SHA-512",
        sasl_username="u",
        sasl_password=SecretStr("p"),
        ssl_cafile=pem["cert"],
        ssl_check_hostname=False,
    )
    env = kafka.environment()
    assert env[f"{K}SASL_PASSWORD"] == "p" and env[f"{K}SSL_CHECK_HOSTNAME"] == "false"
    again = KafkaSettings.model_validate({name.removeprefix(K).lower(): value for name, value in env.items()})
    assert again == kafka


# ------------------------------------------------------------------------------------------------ the factory
def test_sasl_ssl_becomes_aiokafka_arguments_with_a_verifying_tls_context(pem: dict[str, Path]) -> None:
    """SASL_SSL + SCRAM: protocol, mechanism, user and password, and a context that trusts the CA file and checks
    the host name."""
    kafka = KafkaSettings(
        security_protocol="SASL_SSL",
        sasl_mechanism="SCRAM-SHA-512",
        sasl_username="app",
        sasl_password=SecretStr("pw"),
        ssl_cafile=pem["cert"],
    )
    options = clients.security_options(kafka)
    assert {k: v for k, v in options.items() if k != "ssl_context"} == {
        "security_protocol": "SASL_SSL",
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": "app",
        "sasl_plain_password": "pw",
    }
    context = options["ssl_context"]
    assert isinstance(context, ssl.SSLContext)
    assert context.check_hostname and context.verify_mode == ssl.CERT_REQUIRED
    assert [c["subject"] for c in context.get_ca_certs()] == [((("commonName", "minnow-unit"),),)]
    assert clients.security_options(KafkaSettings()) == {"security_protocol": "PLAINTEXT"}


def test_mtls_loads_the_client_certificate_and_can_skip_the_host_name_check(pem: dict[str, Path]) -> None:
    """SSL with a certificate and key: the chain loads; SSL_CHECK_HOSTNAME=false keeps chain verification on."""
    kafka = KafkaSettings(
        security_protocol="SSL",
        ssl_cafile=pem["cert"],
        ssl_certfile=pem["cert"],
        ssl_keyfile=pem["key"],
        ssl_check_hostname=False,
    )
    context = clients.ssl_context(kafka)
    assert context is not None and not context.check_hostname and context.verify_mode == ssl.CERT_REQUIRED


def test_a_key_that_does_not_load_is_a_config_error_naming_the_variables(tmp_path: Path, pem: dict[str, Path]) -> None:
    """A file that is not a key: the message names SSL_CERTFILE, SSL_KEYFILE and SSL_KEY_PASSWORD."""
    not_a_key = tmp_path / "key.pem"
    not_a_key.write_text("not a key\n")
    kafka = KafkaSettings(security_protocol="SSL", ssl_certfile=pem["cert"], ssl_keyfile=not_a_key)
    with pytest.raises(ConfigError, match=r"MINNOW_KAFKA__SSL_CERTFILE .* MINNOW_KAFKA__SSL_KEY_PASSWORD"):
        clients.ssl_context(kafka)


def test_faust_gets_credentials_of_the_matching_kind(tmp_path: Path, pem: dict[str, Path]) -> None:
    """SASL_SSL -> SASLCredentials with a context (faust then says SASL_SSL); SSL -> SSLCredentials; OAUTHBEARER ->
    OAuthCredentials with the file token provider; PLAINTEXT -> none. The app carries them."""
    sasl = KafkaSettings(
        security_protocol="SASL_SSL",
        sasl_mechanism="PLAIN",
        sasl_username="u",
        sasl_password=SecretStr("p"),
        ssl_cafile=None,
    )
    credentials = clients.broker_credentials(sasl)
    assert isinstance(credentials, faust.SASLCredentials)
    assert credentials.protocol.value == "SASL_SSL" and credentials.mechanism.value == "PLAIN"
    assert credentials.username == "u" and credentials.password == "p"
    plain_sasl = clients.broker_credentials(sasl.model_copy(update={"security_protocol": "SASL_PLAINTEXT"}))
    assert isinstance(plain_sasl, faust.SASLCredentials) and plain_sasl.protocol.value == "SASL_PLAINTEXT"
    mtls = KafkaSettings(security_protocol="SSL", ssl_certfile=pem["cert"], ssl_keyfile=pem["key"])
    assert isinstance(clients.broker_credentials(mtls), faust.SSLCredentials)
    token = tmp_path / "token"
    token.write_text("t")
    oauth = KafkaSettings(security_protocol="SASL_SSL", sasl_mechanism="OAUTHBEARER", sasl_oauth_token_file=token)
    from faust.auth import OAuthCredentials

    oauth_credentials = clients.broker_credentials(oauth)
    assert isinstance(oauth_credentials, OAuthCredentials)
    assert isinstance(oauth_credentials.oauth_cb, clients.FileTokenProvider)
    assert clients.broker_credentials(KafkaSettings()) is None
    app = clients.faust_app(sasl.model_copy(update={"group_id": "g"}), autodiscover=False)
    assert app.conf.id == "g" and app.conf.broker_credentials is not None


def test_the_token_file_is_read_again_only_when_it_changes(tmp_path: Path) -> None:
    """OAUTHBEARER: a rotated token is picked up on the next connection; an empty file is a ConfigError."""
    token = tmp_path / "token"
    token.write_text("first\n")
    provider = clients.FileTokenProvider(token)
    assert asyncio.run(provider.token()) == "first"
    token.write_text("second-token\n")
    assert asyncio.run(provider.token()) == "second-token"
    token.write_text("")
    with pytest.raises(ConfigError, match="is empty"):
        asyncio.run(provider.token())


def test_no_module_but_the_factory_builds_a_kafka_client() -> None:
    """Every consumer, producer, admin client and faust app comes from stream/clients.py (and the preflight's one
    raw connection from stream/preflight.py), so a security setting reaches every process."""
    built = re.compile(r"\b(AIOKafkaConsumer|AIOKafkaProducer|AIOKafkaAdminClient|faust\.App|create_conn)\(")
    allowed = {PIPELINE / "stream" / "clients.py", PIPELINE / "stream" / "preflight.py"}
    offenders = [
        f"{path.relative_to(PIPELINE)}:{number}"
        for path in sorted(PIPELINE.rglob("*.py"))
        if path not in allowed
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if built.search(line)
    ]
    assert offenders == []


# ------------------------------------------------------------------------------------------------ explained
@pytest.mark.parametrize(
    ("kafka", "exc", "expected"),
    [
        (
            KafkaSettings(
                security_protocol="SASL_SSL", sasl_mechanism="PLAIN", sasl_username="u", sasl_password=SecretStr("p")
            ),
            errors.SaslAuthenticationFailed("Authentication failed: Invalid username or password"),
            "SASL authentication as 'u' with PLAIN failed",
        ),
        (KafkaSettings(), errors.KafkaConnectionError("Connection at h:1 closed"), "TLS or SASL listener"),
        (KafkaSettings(security_protocol="SSL"), ConnectionResetError(), "may require a client certificate"),
        (KafkaSettings(security_protocol="SSL"), TimeoutError(), "no answer within 15 s"),
        (KafkaSettings(), ConnectionRefusedError(), "nothing listens there"),
        (
            KafkaSettings(security_protocol="SSL"),
            ssl.SSLError(1, "[SSL: WRONG_VERSION_NUMBER] wrong version number"),
            "the port does not speak TLS",
        ),
    ],
)
def test_a_failed_first_connection_is_explained(kafka: KafkaSettings, exc: BaseException, expected: str) -> None:
    """The exception aiokafka only logs becomes words naming the cause and what to set."""
    assert expected in explain(kafka, exc)


def _verify_error(message: str) -> ssl.SSLCertVerificationError:
    error = ssl.SSLCertVerificationError(1, f"[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed: {message}")
    error.verify_message = message
    return error


def test_an_untrusted_certificate_and_a_host_name_mismatch_say_different_things() -> None:
    """Unknown CA -> set SSL_CAFILE; a certificate for another host -> connect by its name, or SSL_CHECK_HOSTNAME."""
    kafka = KafkaSettings(security_protocol="SSL")
    untrusted = explain(kafka, _verify_error("self-signed certificate in certificate chain"))
    assert "not trusted" in untrusted and "MINNOW_KAFKA__SSL_CAFILE" in untrusted
    mismatch = explain(kafka, _verify_error("IP address mismatch, certificate is not valid for '10.0.0.1'."))
    assert "does not name this host" in mismatch and "MINNOW_KAFKA__SSL_CHECK_HOSTNAME=false" in mismatch


def test_preflight_of_an_address_where_nothing_listens_is_one_stream_tool_error() -> None:
    """Bounded and specific: connection refused, named, at once when no wait is configured; exit code 75."""
    kafka = KafkaSettings(bootstrap_servers="127.0.0.1:1", connect_timeout_s=5, startup_wait_s=0)
    with pytest.raises(BrokerUnavailableError, match=r"cannot connect to Kafka at 127\.0\.0\.1:1: connection refused"):
        asyncio.run(preflight(kafka))
    assert BrokerUnavailableError.exit_code == 75


def test_a_broker_that_is_not_there_yet_is_waited_for_with_one_line_per_attempt(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Nothing listens: the process retries with growing pauses, logs each attempt with the address, and gives up
    after startup_wait_s with a line naming the variable; then a broker that comes up during the wait is taken."""
    kafka = KafkaSettings(bootstrap_servers=f"127.0.0.1:{_unused_port()}", connect_timeout_s=1, startup_wait_s=1.6)
    started = time.monotonic()
    gave_up = pytest.raises(BrokerUnavailableError, match=r"after waiting 1\.6 s \(MINNOW_KAFKA__STARTUP_WAIT_S\)")
    with caplog.at_level(logging.WARNING, logger="pipeline.stream.preflight"), gave_up:
        asyncio.run(preflight(kafka))
    took = time.monotonic() - started
    attempts = [r.getMessage() for r in caplog.records]
    assert 1.5 <= took < 4, f"gave up after {took:.1f} s"
    assert len(attempts) == 3, attempts  # pauses of 0.5, 1.0, then the 0.1 s left
    assert all(kafka.bootstrap_servers in line and "connection refused" in line for line in attempts)
    assert [line.split("attempt ")[1][0] for line in attempts] == ["1", "2", "3"]


def test_a_failure_that_cannot_heal_is_not_waited_for() -> None:
    """A TLS client on a plain listener (here: a server that closes at once) is not worth waiting for, whatever
    startup_wait_s says: one StreamToolError, at once, that is not the retryable kind."""

    async def scenario() -> float:
        server = await asyncio.start_server(lambda _r, w: w.close(), "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        kafka = KafkaSettings(bootstrap_servers=f"127.0.0.1:{port}", connect_timeout_s=2, startup_wait_s=30)
        started = time.monotonic()
        try:
            with pytest.raises(StreamToolError) as caught:
                await preflight(kafka)
        finally:
            server.close()
        assert not isinstance(caught.value, BrokerUnavailableError)
        assert "the broker closed the connection" in str(caught.value)
        return time.monotonic() - started

    assert asyncio.run(scenario()) < 5


def _unused_port() -> int:
    with socket.socket() as probe:  # bound, then released: nothing listens there
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_bootstrap_servers_are_read_as_aiokafka_reads_them() -> None:
    """host:port lists with stray commas, a bare host (port 9092) and IPv6; garbage is named."""
    from pipeline.stream.preflight import _servers

    assert _servers("a:1, b:2,") == [("a", 1), ("b", 2)]
    assert _servers("kafka") == [("kafka", 9092)]
    assert _servers("[::1]:9093") == [("::1", 9093)]
    with pytest.raises(StreamToolError, match="'a:x' is not host:port"):
        _servers("a:x")


def test_every_producer_and_the_faust_app_are_idempotent_unless_turned_off() -> None:
    """One delivery promise for every producer (aiokafka's and the ones faust makes for the worker, at-least-once
    too); `exactly_once` refuses non-idempotent producers at start-up with a line naming the variable."""

    def faust_producer(kafka: KafkaSettings) -> Any:  # faust's aiokafka Producer, typed as its protocol
        return clients.faust_app(kafka).producer

    async def built() -> tuple[bool, dict[str, object], dict[str, object]]:
        on, off = KafkaSettings(), KafkaSettings(enable_idempotence=False)
        producer = clients.producer(on)
        try:
            idempotent = producer._txn_manager is not None  # aiokafka keeps no public accessor for the setting
        finally:
            await producer.stop()  # never started: this only releases it
        return (
            idempotent,
            dict(faust_producer(on)._settings_extra()),
            dict(faust_producer(off)._settings_extra()),
        )

    plain, faust_on, faust_off = asyncio.run(built())
    assert plain
    assert faust_on == {"acks": "all", "enable_idempotence": True}
    assert faust_off == {"acks": "all", "enable_idempotence": False}
    with pytest.raises(ValueError, match=f"{K}PROCESSING_GUARANTEE=exactly_once needs idempotent producers"):
        KafkaSettings(processing_guarantee="exactly_once", enable_idempotence=False)
