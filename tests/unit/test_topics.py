"""The topic specs cover exactly the topics in names.py, agree with the events' keys, and their schemas are current."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
from datetime import UTC, datetime
from pathlib import Path

import pytest

from pipeline import topic_specs
from pipeline.cli import main
from pipeline.errors import ConfigError, StreamToolError
from pipeline.models import AnyEvent, Conversation, FeedEvent, IoTMessage, SupportTicket, TranscriptSegment
from pipeline.ops import topics
from pipeline.settings import KafkaSettings
from pipeline.stream import names

DAY_MS = 24 * 60 * 60 * 1000
SEGMENT = TranscriptSegment(id="s-1", conversation_id="c-1", seq=0, speaker="agent", text="hello")
UNREACHABLE = KafkaSettings(bootstrap_servers="127.0.0.1:1", startup_wait_s=0)
SAMPLES: dict[str, AnyEvent] = {
    "feed": FeedEvent(id="f-1", source="news", text="a post", created_at=datetime(2025, 1, 1, tzinfo=UTC)),
    "transcript": SEGMENT,
    "conversation": Conversation(id="c-1", segments=[SEGMENT]),
    "iot": IoTMessage(id="m-1", device_id="d-1", ts=datetime(2025, 1, 1, tzinfo=UTC), readings={"t": 1.0}),
    "ticket": SupportTicket.model_validate(
        {"id": "e-1", "thread_id": "t-1", "body": "Refund?", "from": "a@b.c", "sent_at": "2025-01-01T00:00:00Z"}
    ),
}


@pytest.fixture(scope="module")
def specs() -> dict[str, topic_specs.TopicSpec]:
    return {spec.name: spec for spec in topic_specs.load_specs()}


@pytest.fixture
def spec_dir(tmp_path: Path) -> Path:
    """A copy of topics/ to break on purpose."""
    return Path(shutil.copytree(topic_specs.SPEC_DIR, tmp_path / "topics"))


def _names_py_topics() -> dict[str, str]:
    """Every topic names.py declares, with the role the spec must give it."""
    declared = dict.fromkeys(names.INPUT_TOPICS.values(), "input")
    declared |= dict.fromkeys([*names.SINK_TOPICS.values(), names.IOT_WINDOWS_TOPIC], "sink")
    return (
        declared
        | {
            names.ESCALATION_TOPIC: "escalation",
            names.REVIEW_TOPIC: "review",
            names.DEADLETTER_TOPIC: "deadletter",
            names.LABELS_TOPIC: "labels",
        }
        | dict.fromkeys(names.STATE_TOPICS.values(), "state")
    )


def test_every_topic_in_names_py_has_a_spec_with_its_role_and_no_spec_is_extra(
    specs: dict[str, topic_specs.TopicSpec],
) -> None:
    assert {name: spec.role for name, spec in specs.items()} == _names_py_topics()


def test_spec_keys_name_the_field_that_the_event_keys_by(specs: dict[str, topic_specs.TopicSpec]) -> None:
    """For every topic keyed by an event field, that field's value is what the event's key() returns."""
    checked = 0
    for spec in specs.values():
        for kind, field in (spec.key.by_kind or {}).items():
            event = SAMPLES[kind]
            assert event.key() == str(getattr(event, field)).encode(), (spec.name, kind)
            checked += 1
    assert checked == 21  # 5 kinds over the inputs, 5 over the sinks, windows, 5 each for escalations and review
    assert specs["deadletter"].key.by_kind is None


def test_input_topics_cover_every_event_kind_of_their_family(specs: dict[str, topic_specs.TopicSpec]) -> None:
    """transcripts.in takes segments and whole conversations; a spec's key kinds match its value models."""
    models = {name: spec.value.models for name, spec in specs.items() if spec.role == "input"}
    assert models == {
        "feeds.in": ("pipeline.models:FeedEvent",),
        "transcripts.in": ("pipeline.models:TranscriptSegment", "pipeline.models:Conversation"),
        "iot.in": ("pipeline.models:IoTMessage",),
        "tickets.in": ("pipeline.models:SupportTicket",),
    }
    for kind, logical in names.INPUT_TOPICS.items():
        assert kind in (specs[logical].key.by_kind or {})
    for kind, logical in names.SINK_TOPICS.items():
        assert kind in (specs[logical].key.by_kind or {})


def test_every_state_changelog_is_copartitioned_with_its_input(specs: dict[str, topic_specs.TopicSpec]) -> None:
    """Partition n of a changelog holds the state of input partition n, so their partition counts must match."""
    inputs = {"conversation": names.INPUT_TOPICS["transcript"], "device": names.INPUT_TOPICS["iot"]}
    for owner, logical in names.STATE_TOPICS.items():
        assert specs[logical].partitions == specs[inputs[owner]].partitions, logical


def test_retention_partitions_and_sizes_are_what_the_contract_promises(specs: dict[str, topic_specs.TopicSpec]) -> None:
    summary = {
        name: (spec.partitions, int(spec.config["retention.ms"]) // DAY_MS, spec.config["cleanup.policy"])
        for name, spec in specs.items()
    }
    assert summary == {
        "feeds.in": (6, 7, "delete"),
        "transcripts.in": (6, 7, "delete"),
        "iot.in": (6, 7, "delete"),
        "tickets.in": (6, 7, "delete"),
        "feeds.enriched": (6, 7, "delete"),
        "tickets.enriched": (6, 7, "delete"),
        "transcripts.enriched": (6, 7, "delete"),
        "iot.enriched": (6, 7, "delete"),
        "labels": (3, -1, "compact"),  # training data, replaced per key
        "conversations.changelog": (6, -1, "compact"),  # worker state: the latest value per key, forever
        "iot.devices.changelog": (6, -1, "compact"),
        "iot.windows": (6, 7, "delete"),
        "escalations": (3, 7, "delete"),
        "review": (3, 30, "delete"),
        "deadletter": (3, 30, "delete"),
    }
    assert all(spec.replication_factor is None for spec in specs.values()), "the cluster's default, not 1"
    # Records that carry a whole event (up to 1 MiB) plus more must fit: 2 MiB where that happens.
    big = {name for name, spec in specs.items() if spec.config.get("max.message.bytes") == "2097152"}
    assert big == {"escalations", "review", "deadletter"}


def test_deadletter_headers_are_the_names_py_headers_and_its_value_is_bytes(
    specs: dict[str, topic_specs.TopicSpec],
) -> None:
    spec = specs["deadletter"]
    declared = [getattr(names, attr) for attr in dir(names) if attr.startswith("DLQ_")]
    assert sorted(h.name for h in spec.headers) == sorted(declared)
    assert spec.value.encoding == "bytes"
    schema = topic_specs.json_schema(spec)
    assert sorted(schema["required"]) == sorted(declared)
    assert {p["type"] for p in schema["properties"].values()} == {"string"}


def test_no_topic_is_waiting_for_its_value_model(specs: dict[str, topic_specs.TopicSpec]) -> None:
    """Every JSON topic names its value model; a new `pending:` gap has to change this test on purpose."""
    assert [name for name, spec in specs.items() if spec.value.pending] == []
    assert specs["iot.devices.changelog"].value.models == ("pipeline.stages.devices:DeviceState",)
    assert topic_specs.json_schema(specs["iot.devices.changelog"])["title"] == "DeviceState"


def test_schemas_come_from_the_models_in_the_right_mode(specs: dict[str, topic_specs.TopicSpec]) -> None:
    """Inputs: what producers may send (kind optional); outputs: what Minnow writes; unions list each model."""
    feed_in = topic_specs.json_schema(specs["feeds.in"])
    assert feed_in["title"] == "FeedEvent"
    assert feed_in["required"] == ["id", "source", "text", "created_at"]
    assert feed_in["$schema"] == topic_specs.SCHEMA_DIALECT
    transcripts = topic_specs.json_schema(specs["transcripts.in"])
    assert transcripts["anyOf"] == [{"$ref": "#/$defs/TranscriptSegment"}, {"$ref": "#/$defs/Conversation"}]
    assert set(transcripts["$defs"]) == {"TranscriptSegment", "Conversation"}
    result = topic_specs.json_schema(specs["feeds.enriched"])
    assert result["title"] == "Result"
    assert {"id", "kind", "route", "model", "input"} <= set(result["required"])
    assert topic_specs.json_schema(specs["escalations"])["title"] == "EscalationRecord"


def test_checked_in_schemas_equal_the_generated_ones() -> None:
    """The drift test: a model changed without `minnow topics schemas` fails here, naming the files."""
    assert topic_specs.check_schemas() == []


def test_check_schemas_names_edited_missing_and_orphaned_files_and_write_fixes_them(spec_dir: Path) -> None:
    schemas = spec_dir / "schemas"
    (schemas / "review.json").write_text("{}\n")
    (schemas / "iot.in.json").unlink()
    (schemas / "old.topic.json").write_text("{}\n")
    drifted = topic_specs.check_schemas(spec_dir)
    assert sorted(p.name for p in drifted) == ["iot.in.json", "old.topic.json", "review.json"]
    assert sorted(p.name for p in topic_specs.write_schemas(spec_dir)) == sorted(p.name for p in drifted)
    assert topic_specs.check_schemas(spec_dir) == []
    assert not (schemas / "old.topic.json").exists()
    assert topic_specs.write_schemas(spec_dir) == []


def test_a_changed_value_model_is_drift(spec_dir: Path) -> None:
    """Pointing a spec at another model (what a model edit looks like) makes its checked-in schema stale."""
    path = spec_dir / "feeds.enriched.yaml"
    path.write_text(path.read_text().replace("pipeline.models:Result", "pipeline.models:ErrorRecord"))
    assert topic_specs.check_schemas(spec_dir) == [spec_dir / "schemas" / "feeds.enriched.json"]


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (("partitions: 6", "partitions: 0"), "partitions: Input should be greater than or equal to 1"),
        (("partitions: 6\n", ""), "partitions: Field required"),
        (("pipeline.models:FeedEvent", "pipeline.models:Nope"), "model 'pipeline.models:Nope' cannot be imported"),
        (("pipeline.models:FeedEvent", "pipeline.models"), "is not 'module:Class'"),
        (("by_kind: {feed: id}", "by_kind: {feed: device_id}"), "a feed event has no field 'device_id'"),
        (("cleanup.policy: delete", "cleanup.policy: forever"), "cleanup.policy must be one of delete, compact"),
        (("retention.ms: 604800000", "retention.ms: 7d"), "retention.ms must be milliseconds"),
        (("schema: schemas/feeds.in.json", "schema: feeds.json"), "schema must be schemas/feeds.in.json"),
        (("role: input", "role: deadletter"), "only it, keeps the original bytes"),
        (("role:", "retries: 3\nrole:"), "retries: Extra inputs are not permitted"),
        (("name: feeds.in", "name: [feeds.in"), "is not valid YAML"),
    ],
)
def test_a_bad_spec_is_a_config_error_naming_the_file_and_the_problem(
    spec_dir: Path, edit: tuple[str, str], expected: str
) -> None:
    path = spec_dir / "feeds.in.yaml"
    text = path.read_text()
    assert edit[0] in text
    path.write_text(text.replace(edit[0], edit[1], 1))
    with pytest.raises(ConfigError) as caught:
        topic_specs.load_specs(spec_dir)
    assert str(path) in str(caught.value)
    assert expected in str(caught.value)


def test_a_spec_file_must_be_named_after_its_topic(spec_dir: Path) -> None:
    (spec_dir / "feeds.in.yaml").rename(spec_dir / "feeds_in.yaml")
    with pytest.raises(ConfigError, match=re.escape("the spec of topic 'feeds.in' must be named feeds.in.yaml")):
        topic_specs.load_specs(spec_dir)


def test_an_empty_spec_folder_says_where_it_looked(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=re.escape(f"no topic specs (*.yaml) in {tmp_path}")):
        topic_specs.load_specs(tmp_path)


def test_config_numbers_and_booleans_become_kafka_strings(specs: dict[str, topic_specs.TopicSpec]) -> None:
    raw = specs["review"].model_dump(by_alias=True) | {"config": {"cleanup.policy": "delete", "retention.ms": -1}}
    raw["config"]["preallocate"] = True
    assert topic_specs.TopicSpec.model_validate(raw).config == {
        "cleanup.policy": "delete",
        "retention.ms": "-1",
        "preallocate": "true",
    }


def test_apply_to_an_unreachable_broker_is_a_stream_tool_error_saying_what_to_do(
    specs: dict[str, topic_specs.TopicSpec],
) -> None:
    """Nothing listening: the first connection fails at once with a line naming the address and what to check."""
    with pytest.raises(StreamToolError) as caught:
        asyncio.run(topics.apply(UNREACHABLE, list(specs.values()), timeout_s=10))
    message = str(caught.value)
    assert "cannot connect to Kafka at 127.0.0.1:1" in message and "connection refused" in message
    assert "--bootstrap-servers" in message and "minnow dev kafka start" in message


@pytest.mark.parametrize(
    ("prefix", "replication", "expected"),
    [("bad prefix/", None, "is not a Kafka topic name"), ("minnow.", 0, "replication must be at least 1")],
)
def test_apply_rejects_bad_names_and_replication_before_connecting(
    specs: dict[str, topic_specs.TopicSpec], prefix: str, replication: int | None, expected: str
) -> None:
    # The address is unreachable on purpose: a ConfigError proves nothing was attempted.
    apply = topics.apply(UNREACHABLE, list(specs.values()), name_of=lambda n: prefix + n, replication=replication)
    with pytest.raises(ConfigError, match=expected):
        asyncio.run(apply)


def test_topics_schemas_check_exits_0_when_current_and_1_listing_drifted_files(
    spec_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["topics", "schemas", "--check", "--specs", str(spec_dir)]) == 0
    assert "match the models" in capsys.readouterr().out
    (spec_dir / "schemas" / "deadletter.json").write_text("{}\n")
    assert main(["topics", "schemas", "--check", "--specs", str(spec_dir)]) == 1
    captured = capsys.readouterr()
    assert captured.out.splitlines() == [f"drifted: {spec_dir / 'schemas' / 'deadletter.json'}"]
    assert "run `minnow topics schemas`" in captured.err
    assert main(["topics", "schemas", "--specs", str(spec_dir)]) == 0
    assert f"wrote: {spec_dir / 'schemas' / 'deadletter.json'}" in capsys.readouterr().out
    assert json.loads((spec_dir / "schemas" / "deadletter.json").read_text())["title"] == "deadletter record headers"


def test_topics_apply_reports_a_bad_spec_folder_as_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["topics", "apply", "--specs", str(tmp_path), "--bootstrap-servers", "127.0.0.1:1"]) == 2
    assert f"minnow: no topic specs (*.yaml) in {tmp_path}" in capsys.readouterr().err


def _docs_row(spec: topic_specs.TopicSpec) -> str:
    by_kind = spec.key.by_kind
    key = ", ".join(f"{kind}: `{field}`" for kind, field in by_kind.items()) if by_kind else spec.key.description
    value = ", ".join(f"`{path.split(':')[1]}`" for path in spec.value.models)
    if not value:
        value = "original bytes" if spec.value.encoding == "bytes" else "JSON object (model pending)"
    retention_ms = int(spec.config["retention.ms"])
    retention = "forever" if retention_ms == -1 else f"{retention_ms // DAY_MS} days"
    size = spec.config.get("max.message.bytes", "broker default")
    return f"| `{spec.name}` | {spec.role} | {key} | {value} | {spec.partitions} | {retention} | {size} |"


def test_the_docs_table_lists_every_topic_as_its_spec_says(specs: dict[str, topic_specs.TopicSpec]) -> None:
    docs = (topic_specs.SPEC_DIR.parent / "docs" / "topics.md").read_text()
    table = [line for line in docs.splitlines() if line.startswith("| `")]
    assert sorted(table) == sorted(_docs_row(spec) for spec in specs.values())


@pytest.mark.parametrize(("replication", "expected"), [(1, None), (2, None), (3, "2"), (5, "3")])
def test_three_replicas_or_more_are_acknowledged_by_a_majority(replication: int, expected: str | None) -> None:
    """min.insync.replicas is set to a majority from three replicas up, so one lost broker loses no acknowledged
    write; fewer replicas keep the broker's default; a spec's own value is never overridden."""
    assert topics._with_durability({"retention.ms": "1"}, replication).get("min.insync.replicas") == expected
    assert topics._with_durability({"min.insync.replicas": "3"}, 5)["min.insync.replicas"] == "3"


@pytest.mark.parametrize(
    ("servers", "local"),
    [("127.0.0.1:9092", True), ("localhost:9092,[::1]:9093", True), ("kafka.prod:9093", False)],
)
def test_only_a_local_broker_is_changed_without_a_plan_and_a_yes(servers: str, local: bool) -> None:
    """`minnow topics apply` against anything but this machine prints its plan and asks (or wants --yes)."""
    from pipeline.cli import _is_local

    assert _is_local(servers) is local


def test_apply_to_a_remote_cluster_without_yes_is_refused_after_the_plan(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Not a TTY, not --yes: the plan cannot be shown without the cluster, so an unreachable remote says so and
    nothing is applied (one line; exit 75, since a name that does not resolve yet may resolve later)."""
    from pipeline.cli import main

    monkeypatch.setenv("MINNOW_KAFKA__CONNECT_TIMEOUT_S", "2")
    monkeypatch.setenv("MINNOW_KAFKA__STARTUP_WAIT_S", "0")
    assert main(["topics", "apply", "--bootstrap-servers", "kafka.invalid:9092"]) == 75
    assert len(capsys.readouterr().err.strip().splitlines()) == 1
