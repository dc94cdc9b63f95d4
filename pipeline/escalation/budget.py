"""What the large model costs: a price table, the day's and month's spend, and soft and hard caps on it."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from pipeline import metrics
from pipeline.errors import ConfigError
from pipeline.settings import EscalationSettings, ModelPrice

Refusal = Literal["budget.soft_cap", "budget.hard_cap"]


class PriceTable:
    """USD per million tokens by model name; a dated variant (`gpt-4o-mini-2024-07-18`) takes its family's price."""

    def __init__(self, prices: Mapping[str, ModelPrice], fallback_model: str) -> None:
        self._prices = dict(prices)
        self._fallback = prices[fallback_model]

    def price(self, model: str) -> ModelPrice:
        if model in self._prices:
            return self._prices[model]
        # The endpoint reports the exact snapshot it used; the table is usually written with family names.
        prefixes = [name for name in self._prices if model.startswith(name)]
        return self._prices[max(prefixes, key=len)] if prefixes else self._fallback

    def cost_usd(self, model: str, tokens_in: int, tokens_out: int) -> float:
        price = self.price(model)
        return (tokens_in * price.input_usd_per_mtok + tokens_out * price.output_usd_per_mtok) / 1_000_000


@dataclass(frozen=True)
class Spend:
    """Spend counted against the caps: the current UTC day and calendar month."""

    day: str
    day_usd: float
    month: str
    month_usd: float


@dataclass
class Admission:
    """The budget's answer for one item: refused (with the review reason) or admitted with a reservation."""

    refused: Refusal | None
    reserved_usd: float = 0.0


def _utcnow() -> datetime:
    return datetime.now(UTC)


class Budget:
    """Daily and monthly spend with caps. Past a soft cap only priority reasons are admitted; past a hard cap none.

    An admitted item reserves its estimated cost until it is settled, so concurrent requests cannot together run
    far past a hard cap. Spend lives in memory; with `spend_file` set it is written there after every charge and
    read back at start, so a restart on the same day keeps counting (one file per escalator process).
    """

    def __init__(self, settings: EscalationSettings, *, now: Callable[[], datetime] = _utcnow) -> None:
        self._settings = settings
        self._now = now
        self._reserved = 0.0
        self._file = settings.spend_file
        self._spend = _read_spend(self._file) if self._file is not None else Spend("", 0.0, "", 0.0)
        self._publish()

    @property
    def spend(self) -> Spend:
        self._roll_over()
        return self._spend

    def admit(self, reasons: Sequence[str], estimate_usd: float) -> Admission:
        spend = self.spend
        s = self._settings
        committed_day = spend.day_usd + self._reserved + estimate_usd
        committed_month = spend.month_usd + self._reserved + estimate_usd
        if committed_day > s.daily_hard_cap_usd or committed_month > s.monthly_hard_cap_usd:
            return Admission("budget.hard_cap")
        past_soft = spend.day_usd >= s.daily_soft_cap_usd or spend.month_usd >= s.monthly_soft_cap_usd
        if past_soft and not any(reason in s.priority_reasons for reason in reasons):
            return Admission("budget.soft_cap")
        self._reserved += estimate_usd
        return Admission(None, estimate_usd)

    def charge(self, usd: float) -> None:
        """Count real spend at once (each billed request), so concurrent items see it."""
        if usd <= 0:
            return
        spend = self.spend
        self._spend = Spend(spend.day, spend.day_usd + usd, spend.month, spend.month_usd + usd)
        self._publish()
        if self._file is not None:
            _write_spend(self._file, self._spend)

    def release(self, admission: Admission) -> None:
        """The item is settled: its reservation no longer holds money back."""
        self._reserved = max(self._reserved - admission.reserved_usd, 0.0)
        admission.reserved_usd = 0.0

    def _roll_over(self) -> None:
        now = self._now().astimezone(UTC)
        day, month = now.strftime("%Y-%m-%d"), now.strftime("%Y-%m")
        current = self._spend
        if current.day != day or current.month != month:
            self._spend = Spend(
                day,
                current.day_usd if current.day == day else 0.0,
                month,
                current.month_usd if current.month == month else 0.0,
            )

    def _publish(self) -> None:
        metrics.ESCALATOR_SPEND_PERIOD.labels(period="day").set(self._spend.day_usd)
        metrics.ESCALATOR_SPEND_PERIOD.labels(period="month").set(self._spend.month_usd)
        # The caps beside the spend, so a dashboard and an alert compare the two without copying the settings.
        s = self._settings
        for period, soft, hard in (
            ("day", s.daily_soft_cap_usd, s.daily_hard_cap_usd),
            ("month", s.monthly_soft_cap_usd, s.monthly_hard_cap_usd),
        ):
            metrics.ESCALATOR_BUDGET_CAP.labels(period=period, cap="soft").set(soft)
            metrics.ESCALATOR_BUDGET_CAP.labels(period=period, cap="hard").set(hard)


def _read_spend(path: Path) -> Spend:
    if not path.exists():
        return Spend("", 0.0, "", 0.0)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return Spend(str(data["day"]), float(data["day_usd"]), str(data["month"]), float(data["month_usd"]))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        # Starting from zero would quietly lift the caps; an operator must look at the file.
        raise ConfigError(f"cannot read the spend file {path}: {type(exc).__name__}: {exc}") from exc


def _write_spend(path: Path, spend: Spend) -> None:
    """Atomic: a crash mid-write leaves the previous file, never half of one."""
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps(spend.__dict__), encoding="utf-8")
    os.replace(partial, path)
