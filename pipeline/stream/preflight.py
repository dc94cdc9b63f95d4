"""The first contact with the cluster, before a process starts its real clients: a connection (TLS, SASL, a
metadata request) within `connect_timeout_s`, and what went wrong as one line that says what to fix.

aiokafka's clients only log why a connection failed and raise a bare "Unable to bootstrap"; faust retries and
leaves a traceback. A broker that is not there yet (refused, no answer, a name that does not resolve yet) may come:
the process waits with backoff for `startup_wait_s`, one log line per attempt, then exits 75. Wrong credentials or
an untrusted certificate never heal by retrying, so they end the process at once (docs/connect.md)."""

from __future__ import annotations

import asyncio
import errno
import json
import logging
import socket
import ssl
import time

from aiokafka import errors
from aiokafka.conn import create_conn
from aiokafka.protocol.metadata import MetadataRequest

from pipeline.errors import BrokerUnavailableError, StreamToolError
from pipeline.settings import KafkaSettings
from pipeline.stream.clients import security_options, where

log = logging.getLogger(__name__)

_K = "MINNOW_KAFKA__"
_FIRST_DELAY_S, _MAX_DELAY_S = 0.5, 10.0
# A network that cannot reach the host yet (a pod's network still coming up) is as likely to heal as a refusal.
_TRANSIENT_ERRNOS = {errno.ECONNREFUSED, errno.ENETUNREACH, errno.EHOSTUNREACH, errno.ECONNRESET}
# Clusters (address, security) this process already reached: every tool starts several clients, one check will do.
_reached: set[str] = set()


async def preflight(kafka: KafkaSettings) -> None:
    """Return once one bootstrap server answered a metadata request over the configured security; else raise a
    StreamToolError naming the cause (a ConfigError for settings that cannot even be loaded)."""
    key = json.dumps(sorted(kafka.environment().items()))  # with the secrets: new credentials are checked anew
    if key in _reached:
        return
    await _connect_waiting(kafka)
    _reached.add(key)


async def _connect_waiting(kafka: KafkaSettings) -> None:
    """Try until a server answers; while every failure is one that can heal, wait and try again until
    `startup_wait_s` is spent (then BrokerUnavailableError); any other failure is raised at once."""
    deadline = time.monotonic() + kafka.startup_wait_s
    delay, attempt = _FIRST_DELAY_S, 1
    while True:
        failures = await _connect_once(kafka)
        if not failures:
            if attempt > 1:
                log.warning("Kafka at %s answered (attempt %d)", where(kafka), attempt)
            return
        causes = "; ".join(cause for _, cause in failures)
        if not all(_heals(exc) for exc, _ in failures):
            raise StreamToolError(f"cannot connect to Kafka at {where(kafka)}: {causes}")
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            waited = f" after waiting {kafka.startup_wait_s:g} s ({_K}STARTUP_WAIT_S)" if kafka.startup_wait_s else ""
            raise BrokerUnavailableError(f"cannot connect to Kafka at {where(kafka)}{waited}: {causes}")
        pause = min(delay, remaining)
        log.warning("Kafka at %s: %s; attempt %d, next in %.1f s", where(kafka), causes, attempt, pause)
        await asyncio.sleep(pause)
        delay, attempt = min(delay * 2, _MAX_DELAY_S), attempt + 1


def _heals(exc: BaseException) -> bool:
    """A failure that a broker which is starting (or a network coming up) explains, so waiting can help."""
    if isinstance(exc, ssl.SSLError):
        return False  # an OSError too, but a certificate or protocol mismatch never heals
    if isinstance(exc, socket.gaierror | TimeoutError | errors.KafkaTimeoutError | errors.RequestTimedOutError):
        return True
    return isinstance(exc, OSError) and exc.errno in _TRANSIENT_ERRNOS


async def _connect_once(kafka: KafkaSettings) -> list[tuple[BaseException, str]]:
    """One attempt at each bootstrap server in turn: [] once one answers, else each failure with its explanation."""
    options = security_options(kafka)
    causes: list[tuple[BaseException, str]] = []
    servers = _servers(kafka.bootstrap_servers)
    for host, port in servers:
        try:
            async with asyncio.timeout(kafka.connect_timeout_s):
                conn = await create_conn(
                    host,
                    port,
                    client_id="minnow-preflight",
                    request_timeout_ms=int(kafka.connect_timeout_s * 1000),
                    **options,
                )
                try:
                    metadata = await conn.send(MetadataRequest([]))
                finally:
                    conn.close()
            if not metadata.brokers:
                raise _NoBrokersError()
            return []
        except (OSError, errors.KafkaError, TimeoutError, _NoBrokersError) as exc:
            cause = f"{host}:{port}: {explain(kafka, exc)}" if len(servers) > 1 else explain(kafka, exc)
            causes.append((exc, cause))
    return causes


class _NoBrokersError(Exception):
    """A metadata answer that lists no broker: what follows a refused OAUTHBEARER token, which aiokafka does not
    notice (it takes the broker's error challenge for success and sends its next request anyway)."""


def _servers(bootstrap_servers: str) -> list[tuple[str, int]]:
    """(host, port) of each bootstrap server, as aiokafka reads the list (no port: 9092; empty entries skipped)."""
    found = []
    for server in filter(None, (part.strip() for part in bootstrap_servers.split(","))):
        if server.startswith("[") and "]:" in server:  # [IPv6]:port
            host, port = server[1:].split("]:", 1)
        elif server.count(":") == 1:
            host, port = server.split(":")
        else:  # a host name or an IPv6 address without a port
            host, port = server.strip("[]"), "9092"
        if not port.isdigit() or not host:
            raise StreamToolError(f"{_K}BOOTSTRAP_SERVERS: {server!r} is not host:port")
        found.append((host, int(port)))
    if not found:
        raise StreamToolError(f"{_K}BOOTSTRAP_SERVERS is empty: give host:port[,host:port...]")
    return found


def explain(kafka: KafkaSettings, exc: BaseException) -> str:
    """What a failed first connection means for the person who configured it."""
    if isinstance(exc, _NoBrokersError):
        if kafka.sasl_mechanism == "OAUTHBEARER":
            return (
                f"SASL authentication with OAUTHBEARER failed (the broker refused the token: expired, or not meant "
                f"for this cluster?); check {_K}SASL_OAUTH_TOKEN_FILE"
            )
        return "the broker answered with no brokers in its metadata; check that the cluster is up"
    if isinstance(exc, ssl.SSLError):
        return _tls(exc)
    if isinstance(exc, errors.KafkaError) and _sasl(kafka, exc):
        return _sasl(kafka, exc)
    return _network(kafka, exc)


def _tls(exc: ssl.SSLError) -> str:
    if isinstance(exc, ssl.SSLCertVerificationError):
        verify = str(exc.verify_message or exc)
        if "hostname" in verify.lower() or "ip address mismatch" in verify.lower():
            return (
                f"the broker's certificate does not name this host ({verify}); connect by a name the certificate "
                f"lists, or (test clusters only) set {_K}SSL_CHECK_HOSTNAME=false"
            )
        return f"the broker's TLS certificate is not trusted ({verify}); set {_K}SSL_CAFILE to the CA that signed it"
    reason = str(getattr(exc, "reason", None) or exc)
    if "CERTIFICATE_REQUIRED" in reason.upper() or "HANDSHAKE_FAILURE" in reason.upper():
        return (
            f"the TLS handshake was refused ({reason}); the listener may require a client certificate: "
            f"set {_K}SSL_CERTFILE and {_K}SSL_KEYFILE"
        )
    if "WRONG_VERSION_NUMBER" in reason.upper() or "RECORD_LAYER" in reason.upper():
        return f"the port does not speak TLS ({reason}); it may be a plaintext listener: check {_K}SECURITY_PROTOCOL"
    return f"the TLS handshake failed ({reason})"


def _sasl(kafka: KafkaSettings, exc: errors.KafkaError) -> str:
    """The SASL failure `exc` is, in words; "" when it is not one."""
    if isinstance(exc, errors.UnsupportedSaslMechanismError):
        return f"{_first_line(exc)}; set {_K}SASL_MECHANISM to one the listener enables"
    if isinstance(exc, errors.SaslAuthenticationFailed | errors.AuthenticationFailedError):
        user = f" as {kafka.sasl_username!r}" if kafka.sasl_username else ""
        secret = (
            f"{_K}SASL_OAUTH_TOKEN_FILE"
            if kafka.sasl_mechanism == "OAUTHBEARER"
            else f"{_K}SASL_USERNAME and {_K}SASL_PASSWORD{'_FILE' if kafka.sasl_password_file else ''}"
        )
        return f"SASL authentication{user} with {kafka.sasl_mechanism} failed ({_first_line(exc)}); check {secret}"
    if isinstance(exc, errors.IllegalSaslStateError):
        return (
            f"the listener does not take SASL ({_first_line(exc)}); "
            f"check {_K}SECURITY_PROTOCOL ({kafka.security_protocol})"
        )
    return ""


def _network(kafka: KafkaSettings, exc: BaseException) -> str:
    protocol = kafka.security_protocol
    if isinstance(exc, ConnectionRefusedError):
        return (
            f"connection refused: nothing listens there; check {_K}BOOTSTRAP_SERVERS (or --bootstrap-servers) and "
            "that the broker is up (`minnow dev kafka start` for a local one)"
        )
    if isinstance(exc, TimeoutError | errors.KafkaTimeoutError | errors.RequestTimedOutError):
        hint = (
            f"if it is a TLS listener, set {_K}SECURITY_PROTOCOL to SSL or SASL_SSL"
            if not kafka.uses_tls
            else "check the address, the firewall and that the listener speaks TLS"
        )
        return f"no answer within {kafka.connect_timeout_s:g} s; {hint}"
    if isinstance(exc, errors.KafkaConnectionError | ConnectionError | EOFError | asyncio.IncompleteReadError):
        hint = (
            f"a TLS or SASL listener drops plaintext clients: set {_K}SECURITY_PROTOCOL (now {protocol}) to what the "
            "listener expects"
            if not kafka.uses_tls
            else _closed_on_tls(kafka)
        )
        return f"the broker closed the connection ({_first_line(exc)}); {hint}"
    if isinstance(exc, OSError):
        return f"{exc.strerror or exc}; check the address in {_K}BOOTSTRAP_SERVERS"
    return f"{type(exc).__name__}: {_first_line(exc)}"


def _closed_on_tls(kafka: KafkaSettings) -> str:
    protocol = f"{_K}SECURITY_PROTOCOL (now {kafka.security_protocol})"
    if kafka.ssl_certfile is None:
        return (
            f"the listener may require a client certificate (mTLS: set {_K}SSL_CERTFILE and {_K}SSL_KEYFILE), "
            f"or not speak TLS at all (check {protocol})"
        )
    return f"the listener may not trust the client certificate's CA, or not speak TLS at all (check {protocol})"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
