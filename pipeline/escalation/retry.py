"""When to try a request again: exponential backoff with full jitter, and the provider's Retry-After."""

from __future__ import annotations

import email.utils
import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime


@dataclass(frozen=True)
class RetryPolicy:
    """`max_attempts` tries in all; before try n+1, a delay drawn uniformly from [0, min(max_s, base_s * 2**(n-1))]."""

    max_attempts: int
    base_s: float
    max_s: float

    def backoff_s(self, attempt: int, uniform: Callable[[], float]) -> float:
        """Full jitter (AWS Architecture Blog, "Exponential Backoff And Jitter"): spreads a herd of retries out."""
        ceiling = min(self.max_s, self.base_s * 2 ** max(attempt - 1, 0))
        return float(uniform() * ceiling)


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """Seconds to wait from a Retry-After header: delta-seconds or an HTTP-date; None when absent or unreadable."""
    if value is None or not value.strip():
        return None
    text = value.strip()
    try:
        # RFC 9110 says whole seconds; some providers send fractions, which are read as they are.
        seconds = float(text)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(text)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:  # an HTTP-date is always GMT
            when = when.replace(tzinfo=UTC)
        seconds = (when - (now or datetime.now(UTC))).total_seconds()
    if math.isnan(seconds):
        return None
    return max(seconds, 0.0)
