"""Topic names, the inputs a worker reads and the families it runs: checked at start-up, before any broker."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline import topic_specs
from pipeline.errors import ConfigError
from pipeline.ops.tools import resolve_topic
from pipeline.settings import Settings, TopicsSettings
from pipeline.stages.inputs import worker_inputs

SOCIAL_MAP = "kind: feed\nfields: {id: $.uuid, source: social, text: $.body, created_at: $.ts}\n"
DEVICE_MAP = "kind: iot\nfields: {id: $.n, device_id: $.dev, ts: $.t, readings: $.r}\n"


def _settings(**sections: object) -> Settings:
    return Settings.model_validate(sections)


def test_every_topic_spec_can_be_named_and_defaults_to_the_prefix() -> None:
    """One MINNOW_TOPICS__ variable per topic in topics/; unset, a topic is the prefix plus its logical name."""
    logical = {spec.name for spec in topic_specs.load_specs()}
    assert {name.replace(".", "_") for name in logical} == set(TopicsSettings.model_fields) - {"replication_factor"}
    settings = _settings(kafka={"topic_prefix": "acme."}, topics={"feeds_enriched": "posts.scored"})
    assert settings.topic("feeds.enriched") == "posts.scored"
    assert settings.topic("deadletter") == "acme.deadletter"
    assert all(settings.topic(name) for name in logical)


def test_a_topic_name_kafka_would_refuse_is_refused_at_start_up() -> None:
    """A space or a slash in MINNOW_TOPICS__* is a settings error, not a failure at the broker later."""
    with pytest.raises(ValueError, match="not a Kafka topic name"):
        _settings(topics={"review": "people review"})


def test_a_worker_reads_each_family_topic_by_default_and_only_its_families() -> None:
    """Default: the four families' input topics; `--families feed,iot` keeps those two."""
    every = worker_inputs(_settings())
    assert [(i.topic, i.family) for i in every] == [
        ("minnow.iot.in", "iot"),
        ("minnow.transcripts.in", "transcript"),
        ("minnow.tickets.in", "ticket"),
        ("minnow.feeds.in", "feed"),
    ]
    some = worker_inputs(_settings(worker={"families": "feed,iot"}, topics={"iot_in": "plant.telemetry"}))
    assert [(i.topic, i.family) for i in some] == [("plant.telemetry", "iot"), ("minnow.feeds.in", "feed")]


def test_inputs_of_your_own_are_read_through_their_mappings(tmp_path: Path) -> None:
    """Two feed topics of different shapes in one worker; a kind-only entry for contract-shaped events; paths
    relative to the inputs file; all marked as the user's (not managed by topics apply)."""
    (tmp_path / "maps").mkdir()
    (tmp_path / "maps" / "social.yaml").write_text(SOCIAL_MAP)
    inputs = tmp_path / "inputs.yaml"
    inputs.write_text(
        "inputs:\n"
        "  - {topic: social.posts, map: maps/social.yaml}\n"
        "  - {topic: other.posts, map: maps/social.yaml}\n"
        "  - {topic: support.tickets, kind: ticket}\n"
    )
    read = worker_inputs(_settings(worker={"inputs_file": str(inputs)}))
    assert [(i.topic, i.family, i.mapping is not None, i.kind, i.external) for i in read] == [
        ("social.posts", "feed", True, None, True),
        ("other.posts", "feed", True, None, True),
        ("support.tickets", "ticket", False, "ticket", True),
    ]


@pytest.mark.parametrize(
    ("listing", "families", "message"),
    [
        ("  - {topic: a, map: dev.yaml}\n  - {topic: b, map: dev.yaml}\n", None, "one worker reads one iot topic"),
        ("  - {topic: a, kind: feed}\n  - {topic: a, kind: ticket}\n", None, "listed twice"),
        ("  - {topic: a, kind: feed, map: dev.yaml}\n", None, "either `map`"),
        ("  - {topic: a, kind: feed}\n", "iot", "no input topic for the families iot"),
    ],
)
def test_inputs_that_cannot_work_are_refused_with_what_to_do(
    tmp_path: Path, listing: str, families: str | None, message: str
) -> None:
    """State partitioned like its input (IoT, transcripts) allows one input per worker; a topic is read one way;
    an entry says how to read it; a worker must have something to read."""
    (tmp_path / "dev.yaml").write_text(DEVICE_MAP)
    inputs = tmp_path / "inputs.yaml"
    inputs.write_text("inputs:\n" + listing)
    worker = {"inputs_file": str(inputs), **({"families": families} if families else {})}
    with pytest.raises(ConfigError, match=message):
        worker_inputs(_settings(worker=worker))


def test_tools_resolve_logical_names_to_the_configured_topics() -> None:
    """`minnow tail feeds.enriched` finds an explicitly named sink; other names keep the prefix rule; --raw-topic
    takes the name as given."""
    settings = _settings(topics={"feeds_enriched": "posts.scored"})
    assert resolve_topic("feeds.enriched", settings) == "posts.scored"
    assert resolve_topic("deadletter", settings) == "minnow.deadletter"
    assert resolve_topic("my.topic", settings) == "minnow.my.topic"
    assert resolve_topic("my.topic", settings, raw=True) == "my.topic"
