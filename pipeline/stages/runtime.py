"""Run the mini model off the asyncio event loop, with a bounded number of batches in flight."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from types import TracebackType

from pipeline.models import AnyEvent, ErrorRecord, Scores
from pipeline.stages.infer import MiniModel


class AsyncMiniModel:
    """`await engine.score(events)` while the loop keeps consuming and producing.

    ONNX Runtime releases the GIL during a run, so a thread pool is enough: no process pool, no pickling.
    The semaphore bounds batches in flight so a burst cannot queue unbounded work in the executor.
    """

    def __init__(self, model: MiniModel, inflight_batches: int | None = None) -> None:
        self.model = model
        limit = inflight_batches or model.settings.engine.inflight_batches
        self._executor = ThreadPoolExecutor(max_workers=limit, thread_name_prefix="minnow-infer")
        self._slots = asyncio.Semaphore(limit)

    async def score(self, events: Sequence[AnyEvent]) -> list[Scores | ErrorRecord]:
        async with self._slots:
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(self._executor, self.model.score, list(events))

    def close(self) -> None:
        self._executor.shutdown(wait=True)

    async def __aenter__(self) -> AsyncMiniModel:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
