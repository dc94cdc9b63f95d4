"""Prices and spend caps: past soft, only priority reasons; past hard, nothing; periods roll over; spend persists."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from pipeline.errors import ConfigError
from pipeline.escalation.budget import Budget, PriceTable
from pipeline.settings import EscalationSettings, ModelPrice

PRICES = {
    "gpt-4o-mini": ModelPrice(input_usd_per_mtok=0.15, output_usd_per_mtok=0.60),
    "gpt-4o": ModelPrice(input_usd_per_mtok=2.5, output_usd_per_mtok=10.0),
}


class Now:
    def __init__(self, at: datetime) -> None:
        self.at = at

    def __call__(self) -> datetime:
        return self.at


def settings(**caps: object) -> EscalationSettings:
    values: dict[str, object] = {
        "prices": PRICES,
        "daily_soft_cap_usd": 1.0,
        "daily_hard_cap_usd": 2.0,
        "monthly_soft_cap_usd": 10.0,
        "monthly_hard_cap_usd": 20.0,
        "priority_reasons": ("moderate.uncertain_category",),
    }
    values.update(caps)
    return EscalationSettings.model_validate(values)


def test_cost_from_the_price_table() -> None:
    """1M in + 1M out on gpt-4o-mini is 0.15 + 0.60 USD; 1000 in + 500 out on gpt-4o is 0.0025 + 0.005."""
    table = PriceTable(PRICES, "gpt-4o-mini")
    assert table.cost_usd("gpt-4o-mini", 1_000_000, 1_000_000) == pytest.approx(0.75)
    assert table.cost_usd("gpt-4o", 1000, 500) == pytest.approx(0.0075)


def test_a_dated_model_name_takes_its_longest_family_price_and_unknown_ones_the_configured_models() -> None:
    table = PriceTable(PRICES, "gpt-4o-mini")
    assert table.price("gpt-4o-mini-2024-07-18") == PRICES["gpt-4o-mini"]
    assert table.price("gpt-4o-2024-08-06") == PRICES["gpt-4o"]
    assert table.price("llama-3-70b") == PRICES["gpt-4o-mini"]


def test_below_the_soft_cap_everything_is_admitted() -> None:
    budget = Budget(settings(), now=Now(datetime(2026, 11, 26, tzinfo=UTC)))
    budget.charge(0.5)
    admission = budget.admit(["classify.low_confidence"], 0.01)
    assert admission.refused is None and admission.reserved_usd == 0.01


def test_past_the_soft_cap_only_priority_reasons_are_admitted() -> None:
    budget = Budget(settings(), now=Now(datetime(2026, 11, 26, tzinfo=UTC)))
    budget.charge(1.0)
    assert budget.admit(["classify.low_confidence"], 0.01).refused == "budget.soft_cap"
    assert budget.admit(["classify.low_confidence", "moderate.uncertain_category"], 0.01).refused is None


def test_past_the_hard_cap_nothing_is_admitted_not_even_priority() -> None:
    budget = Budget(settings(), now=Now(datetime(2026, 11, 26, tzinfo=UTC)))
    budget.charge(1.995)
    assert budget.admit(["moderate.uncertain_category"], 0.01).refused == "budget.hard_cap"


def test_reservations_of_items_in_flight_count_against_the_hard_cap() -> None:
    """With 1.5 spent, a 0.3 reservation leaves room for one more 0.3 but not a second; releasing frees it."""
    budget = Budget(settings(daily_soft_cap_usd=2.0), now=Now(datetime(2026, 11, 26, tzinfo=UTC)))
    budget.charge(1.5)
    first = budget.admit(["classify.low_confidence"], 0.3)
    assert first.refused is None
    assert budget.admit(["classify.low_confidence"], 0.3).refused == "budget.hard_cap"
    budget.release(first)
    assert budget.admit(["classify.low_confidence"], 0.3).refused is None


def test_the_monthly_cap_holds_across_days_and_the_daily_one_rolls_over() -> None:
    """1.9 USD a day for 5 days: each new day starts at 0, the month adds up to 9.5; the month's soft cap (10) is
    passed on day 6 and a new month starts from 0 again."""
    now = Now(datetime(2026, 11, 20, 10, tzinfo=UTC))
    budget = Budget(settings(), now=now)
    for _ in range(5):
        budget.charge(1.9)
        now.at += timedelta(days=1)
    assert budget.spend.day_usd == 0.0 and budget.spend.month_usd == pytest.approx(9.5)
    budget.charge(0.6)
    assert budget.admit(["classify.low_confidence"], 0.001).refused == "budget.soft_cap"
    now.at = datetime(2026, 12, 1, 0, 0, 1, tzinfo=UTC)
    assert budget.spend.month_usd == 0.0 and budget.admit(["classify.low_confidence"], 0.001).refused is None


def test_spend_survives_a_restart_through_the_spend_file(tmp_path: Path) -> None:
    spend_file = tmp_path / "spend.json"
    now = Now(datetime(2026, 11, 26, 9, tzinfo=UTC))
    Budget(settings(spend_file=spend_file), now=now).charge(1.25)
    again = Budget(settings(spend_file=spend_file), now=now)
    assert again.spend.day_usd == pytest.approx(1.25) and again.spend.month_usd == pytest.approx(1.25)
    now.at += timedelta(days=1)
    assert Budget(settings(spend_file=spend_file), now=now).spend.day_usd == 0.0


def test_an_unreadable_spend_file_stops_the_start(tmp_path: Path) -> None:
    """Starting from zero would silently lift the caps."""
    spend_file = tmp_path / "spend.json"
    spend_file.write_text("{not json")
    with pytest.raises(ConfigError, match="spend file"):
        Budget(settings(spend_file=spend_file))


def test_settings_refuse_a_model_without_a_price_and_a_soft_cap_above_the_hard_cap() -> None:
    with pytest.raises(ValueError, match="no price for model 'llama'"):
        EscalationSettings(model="llama")
    with pytest.raises(ValueError, match="daily_soft_cap_usd"):
        EscalationSettings(daily_soft_cap_usd=5, daily_hard_cap_usd=4)


def test_prices_caps_and_priority_reasons_are_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """The price table and the priority reasons are JSON in their variables; the key stays secret when printed."""
    from pipeline.settings import load_settings

    monkeypatch.setenv("MINNOW_ESCALATION__MODEL", "llama-3-70b")
    monkeypatch.setenv(
        "MINNOW_ESCALATION__PRICES", '{"llama-3-70b": {"input_usd_per_mtok": 0.6, "output_usd_per_mtok": 0.8}}'
    )
    monkeypatch.setenv("MINNOW_ESCALATION__PRIORITY_REASONS", '["anomaly.high_score"]')
    monkeypatch.setenv("MINNOW_ESCALATION__DAILY_HARD_CAP_USD", "75")
    monkeypatch.setenv("MINNOW_ESCALATION__API_KEY", "sk-very-secret")
    cfg = load_settings().escalation
    assert cfg.prices == {"llama-3-70b": ModelPrice(input_usd_per_mtok=0.6, output_usd_per_mtok=0.8)}
    assert cfg.priority_reasons == ("anomaly.high_score",) and cfg.daily_hard_cap_usd == 75.0
    assert cfg.api_key is not None and "sk-very-secret" not in repr(cfg) and "sk-very-secret" not in str(cfg)


def test_a_model_without_a_price_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    from pipeline.settings import load_settings

    monkeypatch.setenv("MINNOW_ESCALATION__MODEL", "llama-3-70b")
    with pytest.raises(ConfigError, match=r"MINNOW_ESCALATION: .*no price for model 'llama-3-70b'"):
        load_settings()
