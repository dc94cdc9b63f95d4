"""A seeded stream of malformed records, as a careless or hostile producer writes them, mixed with valid events of
every family. Each malformed record is invalid by construction (never checked with Minnow's own parser, so a
parser that let one through would show as a result where a dead letter was due)."""

from __future__ import annotations

import random
import string
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from pipeline.stream import names

START = datetime(2026, 11, 20, 9, 0, tzinfo=UTC)
Headers = list[tuple[str, bytes | None]]  # a header's value may be null on the wire


@dataclass(frozen=True)
class Record:
    """One record to produce: where, its key, value and headers, and what must become of it."""

    topic: str  # logical input topic
    key: bytes | None
    value: bytes | None
    headers: Headers
    category: str  # which kind of malformation, or "valid"
    event_id: str | None = None  # valid events only: the id their result carries

    @property
    def valid(self) -> bool:
        return self.category == "valid"


# ----------------------------------------------------------------------------------------- valid events
def feed_event(n: int) -> dict[str, Any]:
    texts = (
        "Stocks rallied on Wall Street after the central bank held interest rates steady.",
        "The home side scored twice in stoppage time to win the cup final.",
        "New open-source compiler release cuts build times in half.",
        "Scientists report a new battery chemistry that charges in five minutes.",
        "ok",  # too short to classify with confidence: escalated
    )
    return {
        "id": f"fz-feed-{n:05d}",
        "source": "wire",
        "text": texts[n % len(texts)],
        "created_at": (START + timedelta(seconds=n)).isoformat(),
    }


def segment_event(n: int) -> dict[str, Any]:
    turns = (
        "Thanks for calling, how can I help you today?",
        "I was charged twice on my last invoice and I want a refund.",
        "I can see the duplicate charge; the refund will arrive in three days.",
    )
    conversation, seq = f"fz-call-{n % 8}", n // 8
    return {
        "id": f"fz-seg-{n:05d}",
        "conversation_id": conversation,
        "seq": seq,
        "speaker": "agent" if seq % 2 == 0 else "customer",
        "text": turns[seq % len(turns)],
    }


def iot_event(n: int) -> dict[str, Any]:
    device, step = f"fz-dev-{n % 8}", n // 8
    return {
        "id": f"fz-iot-{n:05d}",
        "device_id": device,
        "ts": (START + timedelta(minutes=step)).isoformat(),
        # every ninth reading of a device overheats: an anomaly, escalated
        "readings": {"temperature_c": 96.0 if step % 9 == 4 else 20.0 + step % 5, "humidity_pct": 40.0},
    }


def ticket_event(n: int) -> dict[str, Any]:
    bodies = (
        "My card was declined at the shop this morning although there is money on the account.",
        "I would like to change the delivery address of my last order.",
        "The app crashes every time I open the statements page.",
    )
    return {
        "id": f"fz-msg-{n:05d}",
        "thread_id": f"fz-thread-{n % 16}",
        "subject": "Help needed",
        "body": bodies[n % len(bodies)],
        "from": f"customer{n}@example.com",
        "sent_at": (START + timedelta(seconds=n)).isoformat(),
    }


VALID: dict[str, Callable[[int], dict[str, Any]]] = {
    "feeds.in": feed_event,
    "transcripts.in": segment_event,
    "iot.in": iot_event,
    "tickets.in": ticket_event,
}
assert set(VALID) == set(names.INPUT_TOPICS.values()), "one generator per family's input topic"

# Required fields per family (dropping one makes the event invalid: optional ones have defaults) and values of the
# wrong type or out of range for some of them, none that a lax validator could coerce.
REQUIRED = {
    "feeds.in": ("id", "source", "text", "created_at"),
    "transcripts.in": ("id", "conversation_id", "seq", "speaker", "text"),
    "iot.in": ("id", "device_id", "ts"),
    "tickets.in": ("id", "thread_id", "body", "from", "sent_at"),
}
WRONG: dict[str, dict[str, list[Any]]] = {
    "feeds.in": {
        "id": [None, "", ["a"], {"x": 1}, "i" * 300],
        "text": [None, ["t"], {"t": 1}, 12.5],
        "created_at": ["yesterday", "", [2026], {"y": 1}, "2026-13-45T99:00:00"],
        "source": [None, "", 7, ["wire"]],
    },
    "transcripts.in": {
        "seq": [-1, "first", 1.5, None, [1]],
        "conversation_id": ["", ["c"], {"c": 1}, "c" * 300],
        "speaker": ["", None, 3],
        "text": [None, [], {"t": "x"}],
    },
    "iot.in": {
        "ts": ["later", "", None, [1, 2]],
        "readings": ["hot", [20.0], {"temperature_c": "hot"}, {"t": None}, {"t": [1.0]}],
        "device_id": ["", None, {"d": 1}],
        "text": [5, ["alert"], {"a": 1}],
    },
    "tickets.in": {
        "from": ["", None, ["a@b"]],
        "sent_at": ["soon", None, "2026-02-30T10:00:00"],
        "body": [None, 42, ["b"]],
        "thread_id": ["", "t" * 300, [1]],
    },
}
assert set(WRONG) == set(REQUIRED) == set(VALID)


# ------------------------------------------------------------------------------------ malformed values
def _valid_json(rng: random.Random, topic: str) -> dict[str, Any]:
    return VALID[topic](rng.randrange(10_000, 1_000_000))


def random_bytes(rng: random.Random, topic: str, max_bytes: int) -> bytes:
    # Starting with a letter or a control byte keeps it from being a JSON document (a number, a string, `true`...)
    first = rng.choice(b"\x01\x02\x7fABCxyz{[\xff\xfe\x80")
    return bytes([first]) + rng.randbytes(rng.randrange(0, 400))


def invalid_utf8(rng: random.Random, topic: str, max_bytes: int) -> bytes:
    """A valid event's JSON with a byte sequence that is not UTF-8 inside one of its strings."""
    text = orjson.dumps(_valid_json(rng, topic))
    bad = rng.choice(
        [b"\xff", b"\xfe\xfe", b"\xc3\x28", b"\xe2\x82", b"\xed\xa0\x80", b"\xf8\x88\x80\x80\x80", b"\x80"]
    )
    quote = text.index(b'":"') + 3  # just inside the first string value
    return text[:quote] + bad + text[quote:]


def truncated_json(rng: random.Random, topic: str, max_bytes: int) -> bytes:
    """A strict prefix of a valid event's JSON (an object is only complete with its closing brace)."""
    text = orjson.dumps(_valid_json(rng, topic))
    return text[: rng.randrange(1, len(text))]


def wrong_type(rng: random.Random, topic: str, max_bytes: int) -> bytes:
    event = _valid_json(rng, topic)
    field = rng.choice(sorted(WRONG[topic]))
    event[field] = rng.choice(WRONG[topic][field])
    return orjson.dumps(event)


def missing_field(rng: random.Random, topic: str, max_bytes: int) -> bytes:
    event = _valid_json(rng, topic)
    for field in rng.sample(REQUIRED[topic], rng.randrange(1, len(REQUIRED[topic]) + 1)):
        del event[field]
    return orjson.dumps(event)


def not_an_object(rng: random.Random, topic: str, max_bytes: int) -> bytes:
    return rng.choice(
        [b"[]", b"[1, 2, 3]", b"null", b"0", b"-1.5e300", b'"a string"', b"true", b"false", b"[{}]", b'[{"id": "x"}]']
    )


def empty_value(rng: random.Random, topic: str, max_bytes: int) -> bytes:
    return rng.choice([b"", b" ", b"\n", b"\t \r\n"])


def empty_object(rng: random.Random, topic: str, max_bytes: int) -> bytes:
    return rng.choice([b"{}", b'{"kind": "nonsense"}', b'{"kind": null}', b'{"id": ""}'])


def deep_nesting(rng: random.Random, topic: str, max_bytes: int) -> bytes:
    """Nested deeper than a JSON parser's recursion limit; a parser that took it would find no event fields."""
    depth = rng.randrange(1_100, 1_900)
    opening, closing = rng.choice([(b'{"a":', b"}"), (b"[", b"]")])
    return opening * depth + b"1" + closing * depth


def non_standard_json(rng: random.Random, topic: str, max_bytes: int) -> bytes:
    """What lax JSON writers emit and the JSON grammar (RFC 8259) forbids, inside an otherwise valid event."""
    text = orjson.dumps(_valid_json(rng, topic))
    return rng.choice(
        [
            text[:-1] + b',"extra":NaN}',
            text[:-1] + b',"extra":Infinity}',
            text[:-1] + b",}",  # a trailing comma
            text.replace(b'"', b"'"),  # single quotes
            b"// a comment\n" + text,
            text + b"\n" + text,  # two documents in one record
        ]
    )


def oversize(rng: random.Random, topic: str, max_bytes: int) -> bytes:
    """A valid event whose text (or id) field makes it larger than the worker's input limit."""
    event = _valid_json(rng, topic)
    field = {"feeds.in": "text", "transcripts.in": "text", "iot.in": "text", "tickets.in": "body"}[topic]
    event[field] = "".join(rng.choices(string.ascii_letters + " ", k=max_bytes + rng.randrange(1, 3 * max_bytes)))
    return orjson.dumps(event)


def overlong_id(rng: random.Random, topic: str, max_bytes: int) -> bytes:
    """Under the size limit, but an id beyond the contract's 256 characters."""
    event = _valid_json(rng, topic)
    event["id"] = "x" * rng.randrange(257, min(2000, max_bytes - 400))
    return orjson.dumps(event)


MALFORMED: dict[str, Callable[[random.Random, str, int], bytes]] = {
    "random_bytes": random_bytes,
    "invalid_utf8": invalid_utf8,
    "truncated_json": truncated_json,
    "wrong_type": wrong_type,
    "missing_field": missing_field,
    "not_an_object": not_an_object,
    "empty_value": empty_value,
    "empty_object": empty_object,
    "deep_nesting": deep_nesting,
    "non_standard_json": non_standard_json,
    "oversize": oversize,
    "overlong_id": overlong_id,
}


# ------------------------------------------------------------------------------------- keys and headers
def odd_key(rng: random.Random) -> bytes | None:
    return rng.choice(
        [
            None,
            b"",
            b"\x00",
            b"\xff\xfe\xfd",
            rng.randbytes(rng.randrange(1, 64)),
            "ключ-🔑".encode(),
            b"k" * 1000,
        ]
    )


def garbage_headers(rng: random.Random) -> Headers:
    """Headers of odd names and values, some of them posing as Minnow's own dead-letter headers."""
    forged = [
        names.DLQ_SOURCE_TOPIC,
        names.DLQ_SOURCE_PARTITION,
        names.DLQ_SOURCE_OFFSET,
        names.DLQ_ERROR_CLASS,
        names.DLQ_ATTEMPT,
        "minnow.anything",
    ]
    headers: Headers = []
    for _ in range(rng.randrange(1, 6)):
        name = rng.choice(
            [
                rng.choice(forged),
                "",
                "x-trace",
                "x-trace",  # the same name twice
                "".join(rng.choices(string.printable, k=rng.randrange(1, 20))),
                "заголовок-ü-🙂",
            ]
        )
        value = rng.choice(
            [None, b"", b"\x00\xff", rng.randbytes(rng.randrange(0, 200)), b"-7", b"99999999999999999999"]
        )
        headers.append((name, value))
    return headers


# ------------------------------------------------------------------------------------------ the stream
def stream(seed: int, *, malformed: int, valid_per_topic: int, max_bytes: int) -> list[Record]:
    """`malformed` bad records over every input topic and category (each category at least once per topic),
    with `valid_per_topic` valid events per topic placed at random among them, in their own order."""
    rng = random.Random(seed)
    topics = sorted(VALID)
    categories = sorted(MALFORMED)
    bad: list[Record] = []
    for i in range(malformed):
        # The first rounds go through every (topic, category) pair, the rest are drawn at random.
        pair = i % (len(topics) * len(categories))
        if i < len(topics) * len(categories):
            topic, category = topics[pair % len(topics)], categories[pair // len(topics)]
        else:
            topic, category = rng.choice(topics), rng.choice(categories)
        value: bytes | None = MALFORMED[category](rng, topic, max_bytes)
        if rng.random() < 0.03:
            category, value = "tombstone", None
        key = odd_key(rng) if rng.random() < 0.5 else f"bad-{i}".encode()
        if value is None and key is None:  # a tombstone has a key (Kafka clients refuse a record with neither)
            key = rng.randbytes(8)
        headers = garbage_headers(rng) if rng.random() < 0.3 else []
        bad.append(Record(topic, key, value, headers, category))
    good: list[Record] = []
    for topic in topics:
        for n in range(valid_per_topic):
            event = VALID[topic](n)
            key = odd_key(rng) if rng.random() < 0.2 else str(event["id"]).encode()
            headers = garbage_headers(rng) if rng.random() < 0.3 else []
            good.append(Record(topic, key, orjson.dumps(event), headers, "valid", event_id=str(event["id"])))
    # Valid events of one topic keep their order (a device's readings, a conversation's segments): interleave the
    # good ones, in order, into the shuffled bad ones.
    rng.shuffle(bad)
    slots = set(rng.sample(range(len(bad) + len(good)), len(good)))
    good_iter, bad_iter = iter(good), iter(bad)
    return [next(good_iter) if i in slots else next(bad_iter) for i in range(len(bad) + len(good))]
