"""A throwaway PKI (openssl CLI, PEM files) and the secured local broker the security tests connect to."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from pipeline.ops import devkafka

# Per test session: the plain broker the other tests use runs beside it, unchanged, and a second pytest session
# running at the same time has its own.
INSTANCE = f"secure-{os.getpid()}"
SCRAM_USER = ("minnow-app", "scram-secret-1")
KEY_PASSWORD = "client-key-secret"
_DAYS = "2"


@dataclass(frozen=True)
class Pki:
    """PEM files: a CA, the broker's keystore, a client certificate with an encrypted key, and a stranger CA."""

    ca: Path
    broker_keystore: Path
    client_cert: Path
    client_key: Path  # encrypted with KEY_PASSWORD (PKCS#8)
    other_ca: Path  # signed nothing here: trusting it instead of `ca` is "unknown CA"


@dataclass(frozen=True)
class SecureBroker:
    info: devkafka.BrokerInfo
    pki: Pki

    def env(self, **extra: str) -> dict[str, str]:
        """MINNOW_KAFKA__* for the SASL_SSL listener as the SCRAM user (docs/connect.md, first example)."""
        return {
            "MINNOW_KAFKA__BOOTSTRAP_SERVERS": self.info.sasl_ssl_bootstrap_servers,
            "MINNOW_KAFKA__SECURITY_PROTOCOL": "SASL_SSL",
            "MINNOW_KAFKA__SASL_MECHANISM": "SCRAM-SHA-512",
            "MINNOW_KAFKA__SASL_USERNAME": SCRAM_USER[0],
            "MINNOW_KAFKA__SASL_PASSWORD": SCRAM_USER[1],
            "MINNOW_KAFKA__SSL_CAFILE": str(self.pki.ca),
            **extra,
        }

    def mtls_env(self, **extra: str) -> dict[str, str]:
        """MINNOW_KAFKA__* for the SSL listener with a client certificate (docs/connect.md, mTLS example)."""
        return {
            "MINNOW_KAFKA__BOOTSTRAP_SERVERS": self.info.ssl_bootstrap_servers,
            "MINNOW_KAFKA__SECURITY_PROTOCOL": "SSL",
            "MINNOW_KAFKA__SSL_CAFILE": str(self.pki.ca),
            "MINNOW_KAFKA__SSL_CERTFILE": str(self.pki.client_cert),
            "MINNOW_KAFKA__SSL_KEYFILE": str(self.pki.client_key),
            "MINNOW_KAFKA__SSL_KEY_PASSWORD": KEY_PASSWORD,
            **extra,
        }


def _openssl(*args: str) -> None:
    done = subprocess.run(["openssl", *args], capture_output=True, text=True, timeout=60, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"openssl {' '.join(args[:2])} failed: {done.stderr.strip()}")


def _ca(folder: Path, name: str) -> tuple[Path, Path]:
    key, cert = folder / f"{name}.key", folder / f"{name}.pem"
    _openssl(
        "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
        "-days", _DAYS, "-subj", f"/CN={name}",
    )  # fmt: skip
    return key, cert


def _signed(folder: Path, name: str, ca: tuple[Path, Path], extensions: str) -> tuple[Path, Path]:
    key, csr, cert, ext = (folder / f"{name}{suffix}" for suffix in (".key", ".csr", ".pem", ".ext"))
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(csr), "-subj", f"/CN={name}")
    ext.write_text(extensions + "\n")
    _openssl(
        "x509", "-req", "-in", str(csr), "-CA", str(ca[1]), "-CAkey", str(ca[0]), "-CAcreateserial",
        "-out", str(cert), "-days", _DAYS, "-extfile", str(ext),
    )  # fmt: skip
    return key, cert


def make_pki(folder: Path) -> Pki:
    folder.mkdir(parents=True, exist_ok=True)
    ca = _ca(folder, "minnow-test-ca")
    _, other = _ca(folder, "stranger-ca")
    broker_key, broker_cert = _signed(
        folder, "broker", ca, "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth"
    )
    keystore = folder / "broker-keystore.pem"  # Kafka's PEM key store: the key, then the chain
    keystore.write_text(broker_key.read_text() + broker_cert.read_text() + ca[1].read_text())
    client_key, client_cert = _signed(folder, "minnow-client", ca, "extendedKeyUsage=clientAuth")
    encrypted = folder / "minnow-client.enc.key"
    _openssl(
        "pkcs8", "-topk8", "-v2", "aes-256-cbc", "-in", str(client_key), "-out", str(encrypted),
        "-passout", f"pass:{KEY_PASSWORD}",
    )  # fmt: skip
    return Pki(ca=ca[1], broker_keystore=keystore, client_cert=client_cert, client_key=encrypted, other_ca=other)


def start_secure_broker(folder: Path) -> Iterator[SecureBroker]:
    """The secured broker, its own run folder and ports, stopped afterwards."""
    pki = make_pki(folder / "pki")
    cache_dir = devkafka.default_cache_dir()
    secure = devkafka.SecureListeners(keystore=pki.broker_keystore, truststore=pki.ca, scram_users=(SCRAM_USER,))
    info = devkafka.start(cache_dir, secure=secure, instance=INSTANCE)
    try:
        yield SecureBroker(info, pki)
    finally:
        devkafka.stop(cache_dir, instance=INSTANCE, forget=True)


def unsigned_token(subject: str, lifetime_s: float = 3600.0) -> str:
    """An OAUTHBEARER token Kafka's default (test-only) validator accepts: a JWT with "alg":"none", no signature."""

    def part(value: dict[str, object]) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()

    now = time.time()
    return f"{part({'alg': 'none'})}.{part({'sub': subject, 'iat': now, 'exp': now + lifetime_s})}."
