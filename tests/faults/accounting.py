"""What the fault tests count: for every input, the outputs that stand for it and the topics they went to."""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass

import orjson
from aiokafka import ConsumerRecord

from pipeline.stream import names
from tests.integration.test_worker_e2e import Sent, dead_letter_source


@dataclass(frozen=True)
class Tally:
    """Every input's outputs: how many, and in which of sink / escalation / dead letter they landed."""

    inputs: int
    lost: list[str]  # inputs with no output at all
    duplicates: int  # outputs beyond one per input
    duplicated_inputs: int  # inputs with more than one output
    repeated: frozenset[str]  # those inputs
    most_copies: int  # the most outputs one input had
    split: list[str]  # inputs whose outputs went to more than one kind of destination
    strays: list[str]  # outputs that stand for no input produced
    destinations: Counter[str]  # inputs per destination kind

    def line(self) -> str:
        return (
            f"{self.inputs} inputs: lost {len(self.lost)}, duplicate outputs {self.duplicates} "
            f"(of {self.duplicated_inputs} inputs, at most {self.most_copies} copies of one), split across "
            f"destinations {len(self.split)}; {dict(self.destinations)}"
        )


def destination(topic: str, prefix: str) -> str:
    """sink, escalation or deadletter, from a real output topic name."""
    logical = topic.removeprefix(prefix)
    if logical == names.DEADLETTER_TOPIC:
        return "deadletter"
    if logical == names.ESCALATION_TOPIC:
        return "escalation"
    assert logical in set(names.SINK_TOPICS.values()), f"not an output topic: {topic}"
    return "sink"


def stands_for_one_input(record: ConsumerRecord[bytes, bytes], prefix: str) -> bool:
    """False for an assembled conversation's record: it stands for its segments, which have their own results."""
    if destination(record.topic, prefix) == "deadletter":
        return True
    body = orjson.loads(record.value)
    result = body["result"] if destination(record.topic, prefix) == "escalation" else body
    return bool(result["kind"] != "conversation")


def tally(sent: list[Sent], records: list[ConsumerRecord[bytes, bytes]], prefix: str) -> Tally:
    """Match every output to the input it stands for: a dead letter by the place it names (topic, partition,
    offset), a result by its event id."""
    by_place = {(s.topic, s.partition, s.offset): s for s in sent}
    by_marker = {s.marker: s for s in sent}
    assert len(by_marker) == len(sent), "every input has its own marker"
    places: dict[str, list[str]] = defaultdict(list)
    strays: list[str] = []
    for record in records:
        if not stands_for_one_input(record, prefix):
            continue
        kind = destination(record.topic, prefix)
        if kind == "deadletter":
            source = by_place.get(dead_letter_source(record))
            marker = source.marker if source is not None else f"?{dead_letter_source(record)}"
        else:
            marker = str(orjson.loads(record.value)["id"])  # an escalation carries its result's id too
        if marker not in by_marker:
            strays.append(marker)
            continue
        places[marker].append(kind)
    lost = sorted(m for m in by_marker if not places.get(m))
    extra = {m: len(kinds) - 1 for m, kinds in places.items() if len(kinds) > 1}
    return Tally(
        inputs=len(sent),
        lost=lost,
        duplicates=sum(extra.values()),
        duplicated_inputs=len(extra),
        repeated=frozenset(extra),
        most_copies=max((len(kinds) for kinds in places.values()), default=0),
        split=sorted(m for m, kinds in places.items() if len(set(kinds)) > 1),
        strays=strays,
        destinations=Counter(kinds[0] for kinds in places.values() if kinds),
    )
