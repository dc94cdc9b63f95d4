"""`topics.apply` on a real broker creates every topic as specified, is idempotent, and updates what changed."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from pipeline.cli import main
from pipeline.errors import ConfigError
from pipeline.ops import topics
from pipeline.topic_specs import TopicSpec, load_specs
from tests.integration.helpers import as_kafka

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

SPECS = load_specs()
N_TOPICS = len(SPECS)  # every spec in topics/, whatever their number
DYNAMIC_TOPIC_CONFIG = 1  # DescribeConfigs config_source of an override set on the topic


async def _admin_call(bootstrap: str, call: Callable[[AIOKafkaAdminClient], Any]) -> Any:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        return await call(admin)
    finally:
        await admin.close()


def _observe(bootstrap: str, prefix: str) -> dict[str, tuple[int, dict[str, str]]]:
    """Partition count and topic-level config overrides of every topic under `prefix`, as the broker has them."""

    async def read(admin: AIOKafkaAdminClient) -> dict[str, tuple[int, dict[str, str]]]:
        mine = sorted(name for name in await admin.list_topics() if name.startswith(prefix))
        partitions = {t["topic"]: len(t["partitions"]) for t in await admin.describe_topics(mine)}
        observed = {}
        for response in await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, n) for n in mine]):
            for resource in response.to_object()["resources"]:
                overrides = {
                    e["config_names"]: e["config_value"]
                    for e in resource["config_entries"]
                    if e["config_source"] == DYNAMIC_TOPIC_CONFIG
                }
                name = resource["resource_name"]
                observed[name.removeprefix(prefix)] = (partitions[name], overrides)
        return observed

    result: dict[str, tuple[int, dict[str, str]]] = asyncio.run(_admin_call(bootstrap, read))
    return result


@pytest.fixture
def prefix(kafka_bootstrap: str, random_name: Callable[[str], str]) -> Iterator[str]:
    """A fresh prefix per test; its topics are deleted afterwards, so a shared broker does not fill up."""
    value = random_name("topics") + "."
    yield value

    async def delete(admin: AIOKafkaAdminClient) -> None:
        mine = [name for name in await admin.list_topics() if name.startswith(value)]
        if mine:
            await admin.delete_topics(mine)

    asyncio.run(_admin_call(kafka_bootstrap, delete))


def _with(name: str, **changes: Any) -> list[TopicSpec]:
    """The real specs, with one topic changed."""
    return [spec.model_copy(update=changes) if spec.name == name else spec for spec in SPECS]


def test_apply_creates_every_topic_with_its_partitions_and_configs(kafka_bootstrap: str, prefix: str) -> None:
    report = asyncio.run(topics.apply(as_kafka(kafka_bootstrap), name_of=lambda n: prefix + n, specs=SPECS))
    assert [(c.topic, c.action) for c in report.changes] == [(prefix + s.name, "created") for s in SPECS]
    assert _observe(kafka_bootstrap, prefix) == {spec.name: (spec.partitions, spec.config) for spec in SPECS}
    assert report.count("created") == N_TOPICS and report.changed


def test_a_second_apply_changes_nothing_and_says_so(kafka_bootstrap: str, prefix: str) -> None:
    asyncio.run(topics.apply(as_kafka(kafka_bootstrap), name_of=lambda n: prefix + n, specs=SPECS))
    before = _observe(kafka_bootstrap, prefix)
    again = asyncio.run(topics.apply(as_kafka(kafka_bootstrap), name_of=lambda n: prefix + n, specs=SPECS))
    assert {c.action for c in again.changes} == {"unchanged"}
    assert not again.changed
    assert all(c.details == () and c.notes == () for c in again.changes)
    assert str(again).splitlines()[-1] == f"{N_TOPICS} topics on {kafka_bootstrap}: all up to date, nothing changed"
    assert _observe(kafka_bootstrap, prefix) == before


def test_a_changed_retention_is_updated_and_other_overrides_are_kept(kafka_bootstrap: str, prefix: str) -> None:
    """Only the changed topic is touched; an override set outside the spec survives the update."""
    asyncio.run(topics.apply(as_kafka(kafka_bootstrap), name_of=lambda n: prefix + n, specs=SPECS))
    review = next(spec for spec in SPECS if spec.name == "review")

    async def operator_override(admin: AIOKafkaAdminClient) -> None:
        # Legacy AlterConfigs replaces all overrides, so an operator sends the full set plus theirs.
        configs = dict(review.config) | {"segment.ms": "3600000"}
        await admin.alter_configs([ConfigResource(ConfigResourceType.TOPIC, prefix + "review", configs)])

    asyncio.run(_admin_call(kafka_bootstrap, operator_override))
    # The broker shows an accepted change a few ms later; apply must start from the operator's state.
    deadline = time.monotonic() + 10
    while _observe(kafka_bootstrap, prefix)["review"][1].get("segment.ms") != "3600000":
        assert time.monotonic() < deadline, "the operator's override never became visible"
        time.sleep(0.05)
    one_day = str(24 * 60 * 60 * 1000)
    changed = _with("review", config=review.config | {"retention.ms": one_day})
    report = asyncio.run(topics.apply(as_kafka(kafka_bootstrap), name_of=lambda n: prefix + n, specs=changed))
    updated = {c.topic: c.details for c in report.changes if c.action == "updated"}
    assert updated == {prefix + "review": (f"retention.ms 2592000000 -> {one_day}",)}
    assert report.count("unchanged") == N_TOPICS - 1
    observed = _observe(kafka_bootstrap, prefix)
    assert observed["review"] == (3, review.config | {"retention.ms": one_day, "segment.ms": "3600000"})
    assert observed["deadletter"] == (3, next(s for s in SPECS if s.name == "deadletter").config)


def test_partitions_grow_when_the_spec_grows_and_never_shrink(kafka_bootstrap: str, prefix: str) -> None:
    asyncio.run(topics.apply(as_kafka(kafka_bootstrap), name_of=lambda n: prefix + n, specs=SPECS))
    grown = asyncio.run(
        topics.apply(as_kafka(kafka_bootstrap), name_of=lambda n: prefix + n, specs=_with("escalations", partitions=5))
    )
    change = next(c for c in grown.changes if c.topic == prefix + "escalations")
    assert (change.action, change.details) == ("updated", ("partitions 3 -> 5",))
    assert "per-key order" in change.notes[0]
    assert _observe(kafka_bootstrap, prefix)["escalations"][0] == 5

    shrunk = asyncio.run(
        topics.apply(as_kafka(kafka_bootstrap), name_of=lambda n: prefix + n, specs=_with("escalations", partitions=2))
    )
    change = next(c for c in shrunk.changes if c.topic == prefix + "escalations")
    assert (change.action, change.notes) == (
        "unchanged",
        ("has 5 partitions, the spec 2: Kafka never removes partitions",),
    )
    assert not shrunk.changed
    assert _observe(kafka_bootstrap, prefix)["escalations"][0] == 5


def test_a_replication_factor_above_the_broker_count_is_a_config_error_saying_what_to_pass(
    kafka_bootstrap: str, prefix: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        asyncio.run(topics.apply(as_kafka(kafka_bootstrap), name_of=lambda n: prefix + n, specs=SPECS, replication=3))
    message = str(caught.value)
    assert message.startswith(f"could not create {N_TOPICS} topic(s): ")
    assert "INVALID_REPLICATION_FACTOR" in message
    assert "pass --replication N (1 for a local broker)" in message
    assert _observe(kafka_bootstrap, prefix) == {}


def test_minnow_topics_apply_uses_the_settings_and_prints_the_report(
    kafka_bootstrap: str, prefix: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("MINNOW_KAFKA__BOOTSTRAP_SERVERS", kafka_bootstrap)
    monkeypatch.setenv("MINNOW_KAFKA__TOPIC_PREFIX", prefix)
    assert main(["topics", "apply"]) == 0
    first = capsys.readouterr().out.splitlines()
    assert first[-1] == f"{N_TOPICS} topics on {kafka_bootstrap}: {N_TOPICS} created, 0 updated, 0 unchanged"
    assert first[0].split()[:2] == ["created", prefix + min(s.name for s in SPECS)]  # sorted by name
    assert main(["topics", "apply", "--replication", "1"]) == 0
    assert capsys.readouterr().out.splitlines()[-1].endswith("all up to date, nothing changed")


def test_a_dry_run_prints_the_plan_and_changes_nothing(kafka_bootstrap: str, prefix: str) -> None:
    """`--dry-run`: every topic listed as `would create` with its partitions, the cluster's replication factor (1 on
    the local broker: no factor is set anywhere) and configs; the broker has none of them afterwards."""
    plan = asyncio.run(topics.apply(as_kafka(kafka_bootstrap), name_of=lambda n: prefix + n, specs=SPECS, dry_run=True))
    assert plan.changed and plan.count("created") == N_TOPICS
    text = str(plan)
    assert text.count("would create") == N_TOPICS + 1 and text.endswith("(a plan: nothing was changed)")
    assert all("replication 1," in change.details[0] for change in plan.changes)
    assert _observe(kafka_bootstrap, prefix) == {}


def test_the_cli_applies_to_a_local_broker_and_names_topics_from_the_settings(
    kafka_bootstrap: str, prefix: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`minnow topics apply` on 127.0.0.1 needs no --yes; a MINNOW_TOPICS__ name replaces the prefixed one."""
    monkeypatch.setenv("MINNOW_TOPICS__REVIEW", prefix + "people.queue")
    assert main(["topics", "apply", "--bootstrap-servers", kafka_bootstrap, "--prefix", prefix]) == 0
    observed = _observe(kafka_bootstrap, prefix)
    assert "people.queue" in observed and "review" not in observed and len(observed) == N_TOPICS
    assert "created" in capsys.readouterr().out
