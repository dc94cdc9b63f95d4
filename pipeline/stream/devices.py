"""Per-device state in the IoT worker: each metric's history rescores its anomalies; tumbling windows.

One `DeviceState` per device id, kept like the conversations (pipeline/stream/conversations.py): in the faust
table's store, every change written to the changelog partition of the input record as an output of the batch.
Windows go to `iot.windows` keyed by device, in the same transaction as the readings that closed them.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Collection, MutableMapping, Sequence

from pipeline import metrics
from pipeline.codec import encode
from pipeline.models import AnyEvent, ErrorRecord, IoTMessage, IoTWindow, Scores
from pipeline.settings import Settings
from pipeline.stages.devices import Detectors, DeviceState, close_idle, track, with_anomaly
from pipeline.stream import names
from pipeline.stream.state import changelog_record, wait_ready
from pipeline.stream.worker import InputRecord, OutputRecord, Stepped

StateStore = MutableMapping[bytes, bytes]  # device id -> DeviceState JSON


class Devices:
    """Folds every valid IoT message into its device's state before routing; emits windows as they close."""

    def __init__(
        self,
        settings: Settings,
        store: StateStore,
        *,
        clock: Callable[[], float] = time.time,
        input_topic: str | None = None,
    ) -> None:
        self._settings = settings
        self._store = store
        self._clock = clock
        self._input_topic = input_topic or settings.topic(names.INPUT_TOPICS["iot"])
        self._changelog_topic = settings.topic(names.STATE_TOPICS["device"])
        self._windows_topic = settings.topic(names.IOT_WINDOWS_TOPIC)
        self._detectors = Detectors(settings.iot)
        self._lock = asyncio.Lock()

    async def ready(self, records: Sequence[InputRecord]) -> None:
        await wait_ready(self._store, records)

    async def step(self, valid: Sequence[tuple[AnyEvent, InputRecord]], scores: list[Scores | ErrorRecord]) -> Stepped:
        """Track each message in order (pipeline/stages/devices.py `track`, as `minnow infer` does): its anomaly is
        rescored against the device's history before it. Returns the rescored batch, the windows it closed, then
        the changelog writes of every device it touched."""
        async with self._lock:
            now = self._clock()
            folded_here: dict[str, DeviceState] = {}  # parsed once and written once per device per batch
            touched: dict[str, int] = {}  # device id -> partition
            closed: list[IoTWindow] = []
            rescored: list[Scores | ErrorRecord] = []
            for (event, record), outcome in zip(valid, scores, strict=True):
                if not isinstance(event, IoTMessage):
                    rescored.append(outcome)
                    continue
                state = folded_here.get(event.device_id) or self._load(event.device_id)
                anomaly = outcome.anomaly if isinstance(outcome, Scores) else None
                seen = track(
                    state,
                    event,
                    anomaly,
                    partition=record.source.partition,
                    now=now,
                    settings=self._settings,
                    detectors=self._detectors,
                )
                if _replayed(state, record):
                    # Already folded in before a crash or rebalance replayed it (at-least-once): score it,
                    # but counting it again would skew the history and the window.
                    metrics.IOT_LATE_MESSAGES.labels(placement="replayed").inc()
                else:
                    folded_here[event.device_id] = seen.state.model_copy(update={"offset": record.source.offset})
                    touched[event.device_id] = record.source.partition
                    if seen.closed is not None:
                        closed.append(seen.closed)
                    if seen.placement != "window":
                        metrics.IOT_LATE_MESSAGES.labels(placement=seen.placement).inc()
                rescored.append(with_anomaly(outcome, seen.anomaly))
            for device_id, folded in folded_here.items():
                self._store[device_id.encode()] = encode(folded)
            writes = [self._window(window, touched[window.device_id]) for window in closed]
            writes.extend(self._write(device_id, partition) for device_id, partition in touched.items())
            return Stepped(rescored, writes=writes)

    async def sweep(self, partitions: Collection[int]) -> Stepped:
        """Emit the open window of every device gone quiet, on these (caught-up) partitions."""
        grace_s = self._settings.worker.iot_window_grace_s
        async with self._lock:
            now = self._clock()
            outputs: list[OutputRecord] = []
            for raw in list(self._store.values()):
                state = DeviceState.model_validate_json(raw)
                if state.partition not in partitions or state.window is None:
                    continue
                closed_state, window = close_idle(state, now=now, grace_s=grace_s)
                if window is None:
                    continue
                self._store[state.device_id.encode()] = encode(closed_state)
                outputs.append(self._window(window, state.partition))
                outputs.append(self._write(state.device_id, state.partition))
            return Stepped(writes=outputs)

    # ---------------------------------------------------------------------------------------- internals
    def _load(self, device_id: str) -> DeviceState | None:
        raw = self._store.get(device_id.encode())
        return DeviceState.model_validate_json(raw) if raw else None

    def _write(self, device_id: str, partition: int) -> OutputRecord:
        key = device_id.encode()
        return changelog_record(
            self._changelog_topic, key, self._store.get(key), input_topic=self._input_topic, partition=partition
        )

    def _window(self, window: IoTWindow, partition: int) -> OutputRecord:
        metrics.IOT_WINDOWS.inc()
        return OutputRecord(
            topic=self._windows_topic,
            key=window.device_id.encode(),
            value=encode(window),
            headers=(),
            destination="window",
            reasons=(),
            event_time=window.window_end,
            origin=(self._input_topic, partition),
        )


def _replayed(state: DeviceState | None, record: InputRecord) -> bool:
    """A message at or below the last offset folded in from the same partition has been counted already."""
    return state is not None and state.partition == record.source.partition and record.source.offset <= state.offset
