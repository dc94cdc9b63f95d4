"""`minnow topics apply`: create the topics of the specs in topics/ on a Kafka cluster, or bring them to the specs."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from aiokafka.admin import AIOKafkaAdminClient, NewPartitions, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import KafkaError, for_code

from pipeline.errors import ConfigError, DeliveryError, MinnowError
from pipeline.settings import KafkaSettings
from pipeline.stream import clients
from pipeline.topic_specs import TopicSpec

_TOPIC_NAME = re.compile(r"^[A-Za-z0-9._-]*$")
_MAX_TOPIC_NAME = 249  # Kafka's limit on a topic name
_DYNAMIC_TOPIC_CONFIG = 1  # DescribeConfigs config_source: an override set on the topic itself
_TOPIC_ALREADY_EXISTS = 36
_PROPAGATING = {3, 5}  # UNKNOWN_TOPIC_OR_PARTITION, LEADER_NOT_AVAILABLE
_DESCRIBE_BACKOFF_S = 0.05
# Broker answers that mean the spec or the options are wrong, not the connection.
_CONFIG_CODES = {37, 38, 40, 41, 42}
_HINTS = {
    37: "a topic's partitions can only grow; fix `partitions` in its spec",
    38: "the cluster has fewer brokers than the replication factor; pass --replication N (1 for a local broker)",
    40: "fix `config` in the topic's spec (names and values as in Kafka's topic configuration reference)",
    29: "the client needs CREATE, DESCRIBE_CONFIGS and ALTER_CONFIGS on the Minnow topics",
    31: "the client needs CREATE on the cluster, or the topics created by an administrator",
}


@dataclass(frozen=True)
class TopicChange:
    """What apply did to one topic; `notes` are differences it leaves alone on purpose."""

    topic: str
    action: Literal["created", "updated", "unchanged"]
    details: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class ApplyReport:
    bootstrap_servers: str
    changes: tuple[TopicChange, ...]
    dry_run: bool = False

    @property
    def changed(self) -> bool:
        return any(change.action != "unchanged" for change in self.changes)

    def count(self, action: str) -> int:
        return sum(change.action == action for change in self.changes)

    def __str__(self) -> str:
        width = max((len(change.topic) for change in self.changes), default=0)
        lines = []
        for change in self.changes:
            action = _PLANNED[change.action] if self.dry_run else change.action
            lines.append(f"{action:15} {change.topic:{width}}  {'; '.join(change.details)}".rstrip())
            lines.extend(f"{'':15} {'':{width}}  note: {note}" for note in change.notes)
        total = f"{len(self.changes)} topics on {self.bootstrap_servers}"
        if not self.changed:
            return "\n".join([*lines, f"{total}: all up to date, nothing changed"])
        counts = ", ".join(f"{self.count(action)} {action}" for action in ("created", "updated", "unchanged"))
        if self.dry_run:
            counts = ", ".join(f"{self.count(a)} {_PLANNED[a]}" for a in ("created", "updated", "unchanged"))
            return "\n".join([*lines, f"{total}: {counts} (a plan: nothing was changed)"])
        return "\n".join([*lines, f"{total}: {counts}"])


_PLANNED = {"created": "would create", "updated": "would update", "unchanged": "unchanged"}


@dataclass(frozen=True)
class _Current:
    partitions: int
    replication: int
    configs: dict[str, tuple[str | None, bool]]  # name -> (value, set on the topic itself)


async def apply(
    kafka: KafkaSettings,
    specs: Sequence[TopicSpec],
    *,
    name_of: Callable[[str], str] | None = None,
    replication: int | None = None,
    dry_run: bool = False,
    timeout_s: float = 60.0,
) -> ApplyReport:
    """Create missing topics, bring configs and partition counts of existing ones to the specs; idempotent.

    `name_of` gives each spec's real topic name (`Settings.topic`: MINNOW_TOPICS__*, else the prefix); by default
    the configured prefix plus the spec's logical name. New topics get `replication`, else the spec's factor, else
    the cluster's `default.replication.factor`; with three replicas or more, `min.insync.replicas` is a majority
    unless the spec sets it. Partitions and replication are never lowered. `dry_run` reports what would change and
    changes nothing.
    """
    if replication is not None and replication < 1:
        raise ConfigError(f"replication must be at least 1, got {replication}")
    name_of = name_of or (lambda logical: f"{kafka.topic_prefix}{logical}")
    names = [name_of(spec.name) for spec in specs]
    bad = [n for n in names if len(n) > _MAX_TOPIC_NAME or not _TOPIC_NAME.fullmatch(n)]
    if bad:
        raise ConfigError(
            f"topic name {bad[0]!r} is not a Kafka topic name: use [A-Za-z0-9._-] in MINNOW_KAFKA__TOPIC_PREFIX "
            "(--prefix) and MINNOW_TOPICS__*"
        )
    # A cluster that cannot be reached, or refuses these credentials, is a StreamToolError naming the cause.
    admin = await clients.started(clients.admin(kafka, client_id="minnow-topics"), kafka)
    bootstrap_servers = kafka.bootstrap_servers
    try:
        async with asyncio.timeout(timeout_s):
            changes = await _apply(admin, dict(zip(names, specs, strict=True)), replication, dry_run=dry_run)
    except TimeoutError as exc:
        raise DeliveryError(
            f"Kafka at {bootstrap_servers} did not finish within {timeout_s:.0f} s; check that the broker is up and "
            "the address (--bootstrap-servers, MINNOW_KAFKA__BOOTSTRAP_SERVERS)"
        ) from exc
    except KafkaError as exc:
        raise DeliveryError(
            f"cannot manage topics on Kafka at {bootstrap_servers}: {exc}; start a broker (`minnow dev kafka start`) "
            "or point --bootstrap-servers / MINNOW_KAFKA__BOOTSTRAP_SERVERS at one"
        ) from exc
    finally:
        await admin.close()
    return ApplyReport(bootstrap_servers, tuple(changes[name] for name in names), dry_run=dry_run)


async def _apply(
    admin: AIOKafkaAdminClient, wanted: dict[str, TopicSpec], replication: int | None, *, dry_run: bool
) -> dict[str, TopicChange]:
    # list_topics, not a metadata request by name: brokers with auto.create.topics.enable would create them.
    existing = set(await admin.list_topics())
    changes: dict[str, TopicChange] = {}
    missing = [name for name in wanted if name not in existing]
    default_rf = await _default_replication(admin) if missing else 1
    factors = {name: replication or wanted[name].replication_factor or default_rf for name in missing}
    configs = {name: _with_durability(wanted[name].config, factors[name]) for name in missing}
    if missing and dry_run:
        for name in missing:
            settings = ", ".join(f"{k}={v}" for k, v in configs[name].items())
            details = f"{wanted[name].partitions} partitions, replication {factors[name]}, {settings}"
            changes[name] = TopicChange(name, "created", (details,))
    elif missing:
        new = [NewTopic(name, wanted[name].partitions, factors[name], None, configs[name]) for name in missing]
        response = (await admin.create_topics(new)).to_object()
        problems = []
        for entry in response["topic_errors"]:
            name, code = entry["topic"], entry["error_code"]
            if code == _TOPIC_ALREADY_EXISTS:  # another apply won the race: compare it like any existing topic
                existing.add(name)
            elif code:
                problems.append((name, code, entry.get("error_message")))
            else:
                settings = ", ".join(f"{k}={v}" for k, v in configs[name].items())
                details = f"{wanted[name].partitions} partitions, replication {factors[name]}, {settings}"
                changes[name] = TopicChange(name, "created", (details,))
        _raise_for(problems, "create", done=list(changes))
    present = [name for name in wanted if name in existing]
    if present:
        current = await _describe(admin, present)
        changes |= await _reconcile(admin, {n: wanted[n] for n in present}, current, replication, dry_run=dry_run)
    if not dry_run and any(change.action != "unchanged" for change in changes.values()):
        # Brokers apply accepted changes from the metadata log a few ms later; a worker started right after
        # apply, or the next apply, must see them, not the old values.
        await _describe(admin, list(wanted), ready=lambda name, now: _matches(wanted[name], now))
    return changes


async def _default_replication(admin: AIOKafkaAdminClient) -> int:
    """The cluster's default.replication.factor, read from a broker (CreateTopics before v4 cannot ask for it)."""
    cluster = await admin.describe_cluster()
    broker = str(cluster["brokers"][0]["node_id"])
    for response in await admin.describe_configs([ConfigResource(ConfigResourceType.BROKER, broker)]):
        for resource in response.to_object()["resources"]:
            for entry in resource["config_entries"]:
                if entry["config_names"] == "default.replication.factor" and entry["config_value"]:
                    return int(entry["config_value"])
    return 1  # Kafka's own default


def _with_durability(config: dict[str, str], replication: int) -> dict[str, str]:
    """With three replicas or more, a write is acknowledged by a majority of them (min.insync.replicas), so losing
    one broker loses no acknowledged record; the spec's own value wins."""
    if replication >= 3 and "min.insync.replicas" not in config:
        return {**config, "min.insync.replicas": str(replication // 2 + 1)}
    return dict(config)


def _matches(spec: TopicSpec, now: _Current) -> bool:
    configs = all(now.configs.get(key, (None, False))[0] == value for key, value in spec.config.items())
    return configs and now.partitions >= spec.partitions


async def _describe(
    admin: AIOKafkaAdminClient, names: list[str], ready: Callable[[str, _Current], bool] = lambda name, now: True
) -> dict[str, _Current]:
    """The topics as the broker has them, once it describes them all and each is `ready`.

    A topic created moments ago is listed before a broker can describe it; the caller's timeout bounds the wait.
    """
    while True:
        current, problems = await _describe_once(admin, names)
        if any(code not in _PROPAGATING for _, code, _ in problems):
            _raise_for(problems, "describe")
        if not problems and all(ready(name, current[name]) for name in names):
            return current
        await asyncio.sleep(_DESCRIBE_BACKOFF_S)


async def _describe_once(
    admin: AIOKafkaAdminClient, names: list[str]
) -> tuple[dict[str, _Current], list[tuple[str, int, str | None]]]:
    topics = {t["topic"]: t for t in await admin.describe_topics(names)}
    problems: list[tuple[str, int, str | None]] = [
        (n, t["error_code"], None) for n, t in topics.items() if t["error_code"]
    ]
    configs: dict[str, dict[str, tuple[str | None, bool]]] = {}
    for response in await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, n) for n in names]):
        for r in response.to_object()["resources"]:
            if r["error_code"]:
                problems.append((r["resource_name"], r["error_code"], r["error_message"]))
            configs[r["resource_name"]] = {
                e["config_names"]: (e["config_value"], _is_topic_override(e)) for e in r["config_entries"]
            }
    if problems:
        return {}, problems
    current = {
        name: _Current(
            partitions=len(topics[name]["partitions"]),
            replication=max((len(p["replicas"]) for p in topics[name]["partitions"]), default=0),
            configs=configs[name],
        )
        for name in names
    }
    return current, []


def _is_topic_override(entry: dict[str, Any]) -> bool:
    if "config_source" in entry:
        return bool(entry["config_source"] == _DYNAMIC_TOPIC_CONFIG)
    return not entry["is_default"]  # DescribeConfigs v0 has no source; a non-default is the best hint


async def _reconcile(
    admin: AIOKafkaAdminClient,
    specs: dict[str, TopicSpec],
    current: dict[str, _Current],
    replication: int | None,
    *,
    dry_run: bool,
) -> dict[str, TopicChange]:
    alters: list[ConfigResource] = []
    grow: dict[str, NewPartitions] = {}
    changes: dict[str, TopicChange] = {}
    for name, spec in specs.items():
        now = current[name]
        details = [
            f"{key} {now.configs.get(key, (None, False))[0]} -> {value}"
            for key, value in spec.config.items()
            if now.configs.get(key, (None, False))[0] != value
        ]
        notes = []
        if details:
            # AlterConfigs (the only config write aiokafka has) replaces every override of the topic, so the
            # overrides set outside the spec are sent back with it, or they would be reset to broker defaults.
            kept = {k: v for k, (v, override) in now.configs.items() if override and v is not None}
            alters.append(ConfigResource(ConfigResourceType.TOPIC, name, kept | spec.config))
        if spec.partitions > now.partitions:
            grow[name] = NewPartitions(spec.partitions)
            details.append(f"partitions {now.partitions} -> {spec.partitions}")
            notes.append("keys now hash to other partitions: per-key order holds only among records written after this")
        elif spec.partitions < now.partitions:
            notes.append(f"has {now.partitions} partitions, the spec {spec.partitions}: Kafka never removes partitions")
        rf = replication or spec.replication_factor
        if rf is not None and rf != now.replication:
            notes.append(f"replication factor is {now.replication}, asked {rf}: apply does not move replicas")
        changes[name] = TopicChange(name, "updated" if details else "unchanged", tuple(details), tuple(notes))
    if dry_run:
        return changes
    if alters:
        problems = []
        for response in await admin.alter_configs(alters):
            for r in response.to_object()["resources"]:
                if r["error_code"]:
                    problems.append((r["resource_name"], r["error_code"], r["error_message"]))
        _raise_for(problems, "update the configs of")
    if grow:
        try:
            await admin.create_partitions(grow)
        except KafkaError as exc:
            code = getattr(exc, "errno", None)
            _raise_for([(", ".join(grow), code if isinstance(code, int) else -1, str(exc))], "add partitions to")
    return changes


def _raise_for(problems: list[tuple[str, int, str | None]], action: str, done: Sequence[str] = ()) -> None:
    """Turn the broker's per-topic error codes into one error that says what to do."""
    if not problems:
        return
    # One line per distinct answer: ten topics refused for one reason read as one reason.
    grouped: dict[tuple[int, str | None], list[str]] = {}
    for topic, code, message in problems:
        grouped.setdefault((code, message), []).append(topic)
    parts = [
        f"{', '.join(topics)}: {for_code(code).message}" + (f" ({message})" if message else "")
        for (code, message), topics in grouped.items()
    ]
    hints = list(dict.fromkeys(_HINTS[code] for code, _ in grouped if code in _HINTS))
    text = f"could not {action} {len(problems)} topic(s): {'; '.join(parts)}" + "".join(f"; {h}" for h in hints)
    if done:
        text += f" (done meanwhile: {', '.join(done)})"
    error: type[MinnowError] = ConfigError if all(code in _CONFIG_CODES for _, code, _ in problems) else DeliveryError
    raise error(text)
