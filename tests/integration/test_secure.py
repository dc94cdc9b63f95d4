"""Minnow on a secured cluster: the worker and the escalator over SASL_SSL (SCRAM-SHA-512) and mTLS, every id
accounted for exactly once; OAUTHBEARER with a token file; and wrong credentials, an unknown CA or a plaintext
client on a TLS port end the process at once with one line naming the cause (docs/connect.md)."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from pipeline.settings import KafkaSettings
from tests.integration import test_escalator
from tests.integration.secure import KEY_PASSWORD, SCRAM_USER, SecureBroker, unsigned_token
from tests.integration.test_worker_e2e import (
    MAX_EVENT_BYTES,
    OutputReader,
    Planned,
    WorkerProcess,
    _assert_dead_letters,
    _end_offsets,
    _missing,
    all_seen,
    committed_offsets,
    conversation,
    create_topics,
    deliberately_bad,
    feed,
    interleave,
    iot,
    output_markers,
    produce,
    segment,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(420)]

FAIL_WITHIN_S = 45.0  # python start-up and imports on a busy 2-core machine included; the check itself takes < 1 s


CONNECT_DOC = Path(__file__).resolve().parents[2] / "docs" / "connect.md"


@dataclass(frozen=True)
class Example:
    """One copy-paste example of docs/connect.md, its placeholders replaced by the test broker's files."""

    env: dict[str, str]
    commands: list[list[str]]  # `minnow ...` lines, split, without `minnow`


def documented(name: str, broker: SecureBroker, folder: Path) -> Example:
    """The example marked `<!-- example: name` in docs/connect.md, pointed at the secured test broker."""
    text = CONNECT_DOC.read_text()
    block = re.search(rf"<!-- example: {name}\b.*?-->\n```bash\n(.*?)```", text, re.S)
    assert block is not None, f"no example {name!r} in {CONNECT_DOC}"
    password, token = folder / "kafka-password", folder / "token"
    password.write_text(SCRAM_USER[1] + "\n")
    token.write_text(unsigned_token(SCRAM_USER[0]))
    pki = broker.pki
    places = {
        "kafka-1.example.com:9093": broker.info.sasl_ssl_bootstrap_servers,
        "kafka-1.example.com:9094": broker.info.ssl_bootstrap_servers,
        "/etc/minnow/kafka-password": str(password),
        "/etc/minnow/kafka-ca.pem": str(pki.ca),
        "/etc/minnow/minnow-client.pem": str(pki.client_cert),
        "/etc/minnow/minnow-client.key": str(pki.client_key),
        "/var/run/secrets/kafka/token": str(token),
        "change-me": KEY_PASSWORD,
    }
    env: dict[str, str] = {}
    commands: list[list[str]] = []
    for line in block.group(1).splitlines():
        if line.startswith("export "):
            variable, value = line.removeprefix("export ").split("=", 1)
            env[variable] = places.get(value, value)
        elif line.startswith("minnow "):
            commands.append(line.split()[1:])
    return Example(env, commands)


def settings_from(env: dict[str, str]) -> KafkaSettings:
    """The KafkaSettings that `env` (MINNOW_KAFKA__* variables) gives a process."""
    fields = {name.removeprefix("MINNOW_KAFKA__").lower(): value for name, value in env.items()}
    return KafkaSettings.model_validate(fields)


def child_env(model_cache: Path, **kafka: str) -> dict[str, str]:
    """This process's environment without any MINNOW_* of the developer's, plus `kafka` and the model cache."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MINNOW_")}
    return {**env, "MINNOW_ENGINE__CACHE_DIR": str(model_cache), "MINNOW_WORKER__METRICS_PORT": "0", **kafka}


def small_mix() -> list[Planned]:
    """Every family, a duplicate pair, an empty text and every kind of bad record — the e2e mix, smaller."""
    feeds = [feed(n) for n in range(40)]
    feeds += [feeds[7]]  # the same record twice: two inputs, two outputs with one id
    segments = [segment(f"conv-{c}", seq) for seq in range(5) for c in range(3)]
    readings = [iot(f"dev-{d}", n) for n in range(6) for d in range(3)]
    return interleave(feeds, segments, readings, [conversation(1)], deliberately_bad())


# ---------------------------------------------------------------------------------------------- through
@pytest.mark.parametrize("listener", ["scram", "mtls"])
def test_the_worker_accounts_for_every_id_exactly_once_over(
    listener: str,
    secure_kafka: SecureBroker,
    random_name: Callable[[str], str],
    model_cache: Path,
    tmp_path: Path,
) -> None:
    """Good events, malformed bytes and a duplicate pair through `minnow worker` on a secured listener: one output per
    input (two for the pair), dead letters with their bytes, every offset committed. The test's own clients come
    from the same factory with the same settings, so they cross the same TLS and SASL. The variables are the
    documented example's (docs/connect.md), placeholders replaced."""
    security = documented(listener, secure_kafka, tmp_path).env
    kafka = settings_from(security)
    prefix, group = random_name(listener) + ".", random_name("group")
    env = child_env(
        model_cache,
        **security,
        MINNOW_KAFKA__TOPIC_PREFIX=prefix,
        MINNOW_KAFKA__GROUP_ID=group,
        MINNOW_KAFKA__MAX_EVENT_BYTES=str(MAX_EVENT_BYTES),
    )
    worker = WorkerProcess(env, tmp_path / "worker.log")

    async def run() -> None:
        await create_topics(kafka, prefix)
        sent = await produce(kafka, prefix, small_mix())
        by_place = {(s.topic, s.partition, s.offset): s for s in sent}
        expected = Counter(s.marker for s in sent)
        assert expected["feed-a0007"] == 2
        async with OutputReader(kafka, prefix) as reader:
            worker.start()
            try:
                assert await reader.read_until(all_seen(expected, by_place), timeout_s=240), (
                    _missing(expected, reader.records, by_place) + worker.tail()
                )
                code = worker.stop(signal.SIGTERM)
            finally:
                worker.kill()
            assert code == 0, f"worker exited {code} on SIGTERM\n{worker.tail()}"
            await reader.read_to_end()
        assert output_markers(reader.records, by_place) == expected, "every input exactly once"
        _assert_dead_letters(reader.records, by_place, prefix)
        assert await committed_offsets(kafka, group) == _end_offsets(sent), "every input offset committed"

    asyncio.run(run())


@pytest.mark.parametrize("listener", ["scram", "mtls"])
def test_the_escalator_settles_every_escalation_exactly_once_over(
    listener: str, secure_kafka: SecureBroker, random_name: Callable[[str], str], tmp_path: Path
) -> None:
    """The escalator scenario of test_escalator (two waves, a graceful restart, provider errors, malformed answers,
    undecodable records) over SASL_SSL with SCRAM-SHA-512 and over mTLS, with the documented variables: every id
    once in its sink or review, every offset committed."""
    kafka = settings_from(documented(listener, secure_kafka, tmp_path).env)
    asyncio.run(test_escalator.scenario(kafka, random_name))


# ---------------------------------------------------------------------------------------------- the docs
@pytest.mark.parametrize("name", ["scram", "mtls", "oauth"])
def test_the_documented_examples_connect_and_a_record_goes_round(
    name: str, secure_kafka: SecureBroker, random_name: Callable[[str], str], model_cache: Path, tmp_path: Path
) -> None:
    """docs/connect.md's example, placeholders replaced: its `minnow topics apply` runs as written (the worker line
    is what the end-to-end tests above run with the same variables), then `minnow produce` and `minnow tail` carry
    one record there and back over the same listener."""
    example = documented(name, secure_kafka, tmp_path)
    assert [c[0] for c in example.commands] == ["topics", "worker"]
    env = child_env(model_cache, **example.env, MINNOW_KAFKA__TOPIC_PREFIX=random_name(name) + ".")
    applied = _minnow(env, *example.commands[0])
    assert applied.returncode == 0, applied.stderr
    line = tmp_path / "one.jsonl"
    line.write_text('{"id": "doc-1", "source": "wire", "text": "hello", "created_at": "2026-12-01T00:00:00Z"}\n')
    produced = _minnow(env, "produce", "--topic", "feeds.in", str(line))
    assert produced.returncode == 0, produced.stderr
    tailed = _minnow(env, "tail", "feeds.in", "--from-beginning", "--max", "1", "--timeout", "30", "--json")
    assert tailed.returncode == 0, tailed.stderr
    assert '"doc-1"' in tailed.stdout


# ---------------------------------------------------------------------------------------------- OAUTHBEARER
def oauth_env(secure_kafka: SecureBroker, token_file: Path) -> dict[str, str]:
    return {
        "MINNOW_KAFKA__BOOTSTRAP_SERVERS": secure_kafka.info.sasl_ssl_bootstrap_servers,
        "MINNOW_KAFKA__SECURITY_PROTOCOL": "SASL_SSL",
        "MINNOW_KAFKA__SASL_MECHANISM": "OAUTHBEARER",
        "MINNOW_KAFKA__SASL_OAUTH_TOKEN_FILE": str(token_file),
        "MINNOW_KAFKA__SSL_CAFILE": str(secure_kafka.pki.ca),
    }


def test_oauthbearer_with_a_token_file_applies_topics_and_an_expired_token_is_one_line(
    secure_kafka: SecureBroker, random_name: Callable[[str], str], model_cache: Path, tmp_path: Path
) -> None:
    """`minnow topics apply` over SASL_SSL/OAUTHBEARER with the token in a file succeeds; with an expired token in the
    same file it exits 2 with one line naming OAUTHBEARER and the token file."""
    token = tmp_path / "token"
    token.write_text(unsigned_token("minnow-app"))
    env = child_env(model_cache, **oauth_env(secure_kafka, token), MINNOW_KAFKA__TOPIC_PREFIX=random_name("oauth"))
    done = _minnow(env, "topics", "apply", "--replication", "1")
    assert done.returncode == 0, done.stderr
    assert "created" in done.stdout

    token.write_text(unsigned_token("minnow-app", lifetime_s=-60))
    failed = _minnow(env, "topics", "apply", "--replication", "1")
    _assert_one_line(failed, "SASL authentication with OAUTHBEARER failed", "MINNOW_KAFKA__SASL_OAUTH_TOKEN_FILE")


# ---------------------------------------------------------------------------------------------- failures
def _minnow(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pipeline.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=FAIL_WITHIN_S * 2,
        check=False,
        stdin=subprocess.DEVNULL,
    )


def _assert_one_line(done: subprocess.CompletedProcess[str], *wanted: str) -> None:
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2, f"exit {done.returncode}\n{done.stderr}"
    assert len(lines) == 1 and lines[0].startswith("minnow: "), f"not one line:\n{done.stderr}"
    assert "Traceback" not in done.stderr
    for part in wanted:
        assert part in lines[0], f"{part!r} not in {lines[0]!r}"


CASES: dict[str, tuple[list[str], Callable[[SecureBroker, Path], dict[str, str]], tuple[str, ...]]] = {
    "worker, wrong password": (
        ["worker"],
        lambda broker, _: broker.env(MINNOW_KAFKA__SASL_PASSWORD="not-the-password"),
        (f"SASL authentication as '{SCRAM_USER[0]}' with SCRAM-SHA-512 failed", "MINNOW_KAFKA__SASL_PASSWORD"),
    ),
    "escalator, wrong password from a file": (
        ["escalator"],
        lambda broker, tmp: broker.env(
            MINNOW_KAFKA__SASL_PASSWORD="", MINNOW_KAFKA__SASL_PASSWORD_FILE=str(_file(tmp, "password", "nope\n"))
        ),
        ("SASL authentication", "failed", "MINNOW_KAFKA__SASL_PASSWORD_FILE"),
    ),
    "worker, plaintext client on the SASL_SSL port": (
        ["worker"],
        lambda broker, _: {"MINNOW_KAFKA__BOOTSTRAP_SERVERS": broker.info.sasl_ssl_bootstrap_servers},
        ("the broker closed the connection", "MINNOW_KAFKA__SECURITY_PROTOCOL (now PLAINTEXT)"),
    ),
    "topics apply, plaintext client on the mTLS port": (
        ["topics", "apply"],
        lambda broker, _: {"MINNOW_KAFKA__BOOTSTRAP_SERVERS": broker.info.ssl_bootstrap_servers},
        ("the broker closed the connection", "MINNOW_KAFKA__SECURITY_PROTOCOL"),
    ),
    "tail, unknown CA": (
        ["tail", "feeds.in", "--max", "1"],
        lambda broker, _: broker.env(MINNOW_KAFKA__SSL_CAFILE=str(broker.pki.other_ca)),
        ("TLS certificate is not trusted", "MINNOW_KAFKA__SSL_CAFILE"),
    ),
    "produce, mTLS listener without a client certificate": (
        ["produce", "--topic", "feeds.in", "-"],
        lambda broker, _: {
            k: v
            for k, v in broker.mtls_env().items()
            if k in ("MINNOW_KAFKA__BOOTSTRAP_SERVERS", "MINNOW_KAFKA__SECURITY_PROTOCOL", "MINNOW_KAFKA__SSL_CAFILE")
        },
        ("client certificate", "MINNOW_KAFKA__SSL_CERTFILE"),
    ),
    "review, wrong password": (
        ["review", "--accept", "mini", "--reviewer", "test"],
        lambda broker, _: broker.env(MINNOW_KAFKA__SASL_PASSWORD="not-the-password"),
        ("SASL authentication", "failed"),
    ),
}


def _file(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.write_text(text)
    return path


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_wrong_setting_ends_the_process_at_once_with_one_line(
    case: str, secure_kafka: SecureBroker, model_cache: Path, tmp_path: Path
) -> None:
    """The real CLI as a subprocess: exit 2 well within FAIL_WITHIN_S, one line on stderr (no traceback, no retry
    loop) that names the cause and the variable to fix."""
    args, env_of, wanted = CASES[case]
    security = {k: v for k, v in env_of(secure_kafka, tmp_path).items() if v != ""}
    started = time.monotonic()
    done = _minnow(child_env(model_cache, **security), *args)
    took = time.monotonic() - started
    _assert_one_line(done, *wanted)
    assert took < FAIL_WITHIN_S, f"took {took:.1f}s"
    print(f"\n[{case}] exit {done.returncode} after {took:.1f}s: {done.stderr.strip()}")
