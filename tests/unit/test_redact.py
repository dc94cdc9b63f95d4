"""Redaction before escalation: each kind found and checked, placeholders stable, originals restored, fast."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from pydantic import ValidationError

from pipeline.escalation.redact import (
    DEFAULT_EVAL_SET,
    PiiKind,
    RedactionSettings,
    _resolve,
    evaluate,
    iban_valid,
    luhn_valid,
    main,
    redact,
    restore,
)


def found(text: str, settings: RedactionSettings | None = None) -> list[tuple[str, str]]:
    """(kind, original text) for every redacted span, in order."""
    return [(span.kind.value, text[span.start : span.end]) for span in redact(text, settings).spans]


@pytest.mark.parametrize(
    "value",
    ["maria.gonzalez@example.com", "j.smith+orders@mail.example.org", "SARAH.OCONNOR@EXAMPLE.COM", "a_b-c@uni-x.de"],
)
def test_emails_are_found_whole(value: str) -> None:
    assert found(f"write to {value}, thanks.") == [("email", value)]


@pytest.mark.parametrize("text", ["user@localhost", "@handle mentioned you", "a@b", "price 3@4.99"])
def test_things_with_an_at_sign_that_are_not_emails(text: str) -> None:
    assert found(text) == []


@pytest.mark.parametrize(
    "value",
    [
        "+44 20 7946 0958",
        "(415) 555-0132",
        "415.555.0132",
        "415-555-0132",
        "1-800-555-0100",
        "+1 (212) 555-0147",
        "+44 (0)20 7946 0000",
        "+919876543210",
        "020 7946 0321",
        "07700 900123",
        "(020) 7946 0123",
    ],
)
def test_phone_formats_are_found(value: str) -> None:
    assert found(f"call {value} today") == [("phone", value)]


@pytest.mark.parametrize(
    "text",
    [
        "delivered on 2026-11-26",
        "meeting at 14:30 or 16:45:30",
        "order 1004587 and #48213-77",
        "price $1,299.99",
        "ISBN 978-3-16-148410-0",
        "+5 points for the team",
        "+12345 is too short for a phone number",
        "SKU 4411-2203-17",
    ],
)
def test_numbers_that_are_not_phones(text: str) -> None:
    assert found(text) == []


def test_luhn_accepts_known_test_cards_and_rejects_one_digit_off() -> None:
    assert luhn_valid("4111111111111111") and luhn_valid("378282246310005") and luhn_valid("30569309025904")
    assert not luhn_valid("4111111111111112")
    assert not luhn_valid("4111 1111 1111 1111")  # separators are stripped by the caller, not here


@pytest.mark.parametrize(
    "value", ["4111 1111 1111 1111", "5555-5555-5555-4444", "4242424242424242", "3782 822463 10005", "3056 930902 5904"]
)
def test_cards_with_spaces_dashes_or_none_are_found(value: str) -> None:
    assert found(f"card {value} exp 12/28") == [("card", value)]


@pytest.mark.parametrize(
    "text",
    [
        "reference 4111 1111 1111 1112 failed",  # 16 digits, Luhn fails: not a card
        "account id 1234567812345678",
        "USPS 9400 1000 0000 0000 0000 00",  # a longer grouped number must not yield a 16-digit slice
        "tracking 1Z999AA10123456784",
    ],
)
def test_digit_runs_that_fail_the_card_checks(text: str) -> None:
    assert found(text) == []


def test_a_valid_card_after_a_rejected_number_is_still_found() -> None:
    assert found("ref 4111 1111 1111 1112, card 4111 1111 1111 1111") == [("card", "4111 1111 1111 1111")]


def test_a_card_next_to_short_numbers_is_found() -> None:
    assert found("ref 12 4111 1111 1111 1111 12/28") == [("card", "4111 1111 1111 1111")]


def test_a_card_inside_a_longer_number_grouped_in_fours_is_not_carved_out() -> None:
    # Part of a longer grouped number (a tracking or account number) is not a card on its own.
    assert found("ref 1234 4111 1111 1111 1111 and 4111 1111 1111 1111 5678") == []


def test_iban_mod97_accepts_valid_and_rejects_altered_check_digits() -> None:
    assert iban_valid("DE89370400440532013000") and iban_valid("GB82 WEST 1234 5698 7654 32")
    assert iban_valid("fr1420041010050500013m02606")
    assert not iban_valid("DE88370400440532013000")
    assert not iban_valid("DE89370400440532013001")
    assert not iban_valid("DE89")


@pytest.mark.parametrize(
    "value",
    [
        "DE89 3704 0044 0532 0130 00",
        "GB82WEST12345698765432",
        "FR14 2004 1010 0505 0001 3M02 606",
        "NO93 8601 1117 947",
    ],
)
def test_ibans_with_or_without_spaces_are_found(value: str) -> None:
    assert found(f"wire to {value} please") == [("iban", value)]


def test_iban_match_stops_before_a_following_capitalised_word() -> None:
    assert found("Pay DE89 3704 0044 0532 0130 00 TO Max") == [("iban", "DE89 3704 0044 0532 0130 00")]


def test_iban_shaped_codes_failing_mod97_are_kept() -> None:
    assert found("ref DE00 1234 5678 9012 3456 78 and XX12 3456 7890 1234 5678") == []


@pytest.mark.parametrize(
    "value",
    ["203.0.113.45", "8.8.8.8", "1.2.3.4", "2001:db8:85a3::8a2e:370:7334", "::1", "::ffff:192.0.2.128", "fe80::1"],
)
def test_ip_addresses_are_found(value: str) -> None:
    assert found(f"from {value} today") == [("ip", value)]


@pytest.mark.parametrize(
    "text",
    [
        "octets 256.300.1.1 out of range",
        "leading zero 192.168.01.1",
        "version 1.2.3.4.5 and 1.2.3",
        "tag v1.2.3.4",
        "at 14:30:05",
        "MAC 00:1A:2B:3C:4D:5E",
        "ratio 16:9",
    ],
)
def test_things_that_look_like_ips_but_are_not(text: str) -> None:
    assert found(text) == []


def test_ip_followed_by_sentence_punctuation_excludes_it() -> None:
    assert found("router 192.168.1.1. then 2001:db8::42: refused") == [("ip", "192.168.1.1"), ("ip", "2001:db8::42")]


@pytest.mark.parametrize(
    "value",
    [
        "221B Baker Street",
        "1600 Pennsylvania Ave NW",
        "10 Downing St.",
        "350 5th Ave, Suite 4200",
        "500 Martin Luther King Jr. Drive",
        "12-14 High Street",
        "1234 Elm Street Apt 5B",
    ],
)
def test_street_addresses_are_found(value: str) -> None:
    assert found(f"send it to {value} today") == [("address", value)]


@pytest.mark.parametrize(
    "text",
    ["we walked down the street for 20 minutes", "Room 12 Main Hall", "we sold 12 Items", "3 Street Fighter games"],
)
def test_numbers_before_words_that_are_not_addresses(text: str) -> None:
    assert found(text) == []


def test_an_email_wins_over_a_phone_inside_its_local_part() -> None:
    assert found("text 415-555-0132@vtext.example.com now") == [("email", "415-555-0132@vtext.example.com")]


def test_overlaps_keep_the_longest_then_the_more_specific_kind() -> None:
    candidates = [(PiiKind.ADDRESS, 0, 10), (PiiKind.CARD, 0, 10), (PiiKind.PHONE, 2, 6), (PiiKind.EMAIL, 8, 20)]
    # The email (12 chars) beats the overlapping card (10); the phone does not touch the email and stays.
    assert _resolve(candidates, 20) == [(PiiKind.PHONE, 2, 6), (PiiKind.EMAIL, 8, 20)]
    assert _resolve([(PiiKind.ADDRESS, 0, 10), (PiiKind.CARD, 0, 10)], 10) == [(PiiKind.CARD, 0, 10)]


def test_placeholders_are_numbered_per_kind_and_reused_for_the_same_value() -> None:
    text = "a@x.com, b@x.com, a@x.com; call 415-555-0132 or 415-555-0199"
    result = redact(text)
    assert result.text == "[EMAIL_1], [EMAIL_2], [EMAIL_1]; call [PHONE_1] or [PHONE_2]"
    assert result.mapping == {
        "[EMAIL_1]": "a@x.com",
        "[EMAIL_2]": "b@x.com",
        "[PHONE_1]": "415-555-0132",
        "[PHONE_2]": "415-555-0199",
    }
    assert [(s.placeholder, s.start, s.end) for s in result.spans][:3] == [
        ("[EMAIL_1]", 0, 7),
        ("[EMAIL_2]", 9, 16),
        ("[EMAIL_1]", 18, 25),
    ]


def test_a_placeholder_already_in_the_input_is_not_reused() -> None:
    result = redact("literal [EMAIL_1] then a@x.com")
    assert result.text == "literal [EMAIL_1] then [EMAIL_2]"
    assert restore(result.text, result.mapping) == "literal [EMAIL_1] then a@x.com"


def test_restore_round_trips_every_kind() -> None:
    text = (
        "Mail amy@example.com or call +44 20 7946 0958; card 4111 1111 1111 1111; IBAN GB82 WEST 1234 5698 7654 32; "
        "from 203.0.113.9 / 2001:db8::1; ship to 221B Baker Street."
    )
    result = redact(text)
    assert {span.kind for span in result.spans} == set(PiiKind)
    assert "amy@example.com" not in result.text and "4111" not in result.text
    assert restore(result.text, result.mapping) == text


def test_restore_fills_a_models_answer_and_leaves_unknown_placeholders() -> None:
    mapping = {"[EMAIL_1]": "amy@example.com", "[CARD_1]": "[EMAIL_1]"}
    answer = "Reply to [EMAIL_1]; the card [CARD_1] was refunded; [PHONE_9] is unknown."
    # One pass: an original that looks like a placeholder is not substituted a second time.
    assert (
        restore(answer, mapping) == "Reply to amy@example.com; the card [EMAIL_1] was refunded; [PHONE_9] is unknown."
    )


def test_settings_turn_single_kinds_off() -> None:
    text = "amy@example.com 4111 1111 1111 1111 203.0.113.9"
    assert found(text, RedactionSettings(email=False)) == [("card", "4111 1111 1111 1111"), ("ip", "203.0.113.9")]
    off = RedactionSettings(email=False, phone=False, card=False, iban=False, ip=False, address=False)
    assert redact(text, off).text == text


def test_settings_default_on_frozen_and_strict() -> None:
    settings = RedactionSettings()
    assert all(settings.enabled(kind) for kind in PiiKind)
    with pytest.raises(ValidationError):
        settings.email = False
    with pytest.raises(ValidationError):
        RedactionSettings(emails=False)  # type: ignore[call-arg]


def test_the_repr_does_not_show_the_originals() -> None:
    assert "amy@example.com" not in repr(redact("amy@example.com"))


def test_empty_input() -> None:
    result = redact("")
    assert (result.text, result.spans, result.mapping) == ("", (), {})


def test_emoji_and_control_characters_keep_offsets_right() -> None:
    text = "🙂🎉\x00\x07amy@example.com\u200b\t(415) 555-0132\x1b"
    assert found(text) == [("email", "amy@example.com"), ("phone", "(415) 555-0132")]
    assert redact(text).text == "🙂🎉\x00\x07[EMAIL_1]\u200b\t[PHONE_1]\x1b"


ADVERSARIAL = {
    "letters": "a" * 100_000,
    "digits": "1" * 100_000,
    "spaced digits": "1 " * 50_000,
    "dashed digits": "1-" * 50_000,
    "at signs": "a@" * 50_000,
    "dotted labels": "x@" + "a." * 50_000,
    "dots and digits": "1." * 50_000,
    "colons": ":" * 100_000,
    "hex colons": "a:" * 50_000,
    "plus digits": "+1 " * 33_000,
    "parentheses": "(1) " * 25_000,
    "street words": "1 " + "Aaa " * 25_000,
    "iban-like": "DE89 " + "AAAA " * 20_000,
}


@pytest.mark.parametrize("name", list(ADVERSARIAL))
def test_adversarial_100kb_input_finishes_in_well_under_a_second(name: str) -> None:
    text = ADVERSARIAL[name]
    began = time.perf_counter()
    result = redact(text)
    elapsed = time.perf_counter() - began
    assert elapsed < 1.0, f"{name}: {elapsed:.3f} s"
    assert restore(result.text, result.mapping) == text


def test_ten_kilobytes_of_dense_messages_take_milliseconds() -> None:
    messages = [json.loads(line)["text"] for line in DEFAULT_EVAL_SET.read_text(encoding="utf-8").splitlines()]
    text = "\n".join(messages)[:10_000]
    redact(text)
    began = time.perf_counter()
    for _ in range(10):
        redact(text)
    # Measured at ~4 ms here; the bound only catches a regression by an order of magnitude on a slow CI box.
    assert (time.perf_counter() - began) / 10 < 0.05


def test_eval_set_is_large_varied_and_consistent() -> None:
    records = [json.loads(line) for line in DEFAULT_EVAL_SET.read_text(encoding="utf-8").splitlines()]
    assert len(records) >= 150
    assert sum(not record["pii"] for record in records) >= 40
    kinds = {item["kind"] for record in records for item in record["pii"]}
    assert kinds == {kind.value for kind in PiiKind}
    assert all(item["value"] in record["text"] for record in records for item in record["pii"])


def test_eval_set_scores_meet_the_bar() -> None:
    scores = evaluate(DEFAULT_EVAL_SET)
    assert scores["overall"]["recall"] >= 0.95
    assert scores["overall"]["precision"] >= 0.9
    for kind in ("card", "iban", "email"):
        assert scores[kind]["recall"] == 1.0, kind


def test_evaluate_counts_kind_and_exact_text(tmp_path: Path) -> None:
    path = tmp_path / "set.jsonl"
    lines = [
        {"text": "mail amy@example.com", "pii": [{"kind": "email", "value": "amy@example.com"}]},
        {"text": "call 415-555-0132", "pii": [{"kind": "ip", "value": "415-555-0132"}]},
        {"text": "nothing here", "pii": []},
    ]
    path.write_text("\n".join(json.dumps(line) for line in lines) + "\n", encoding="utf-8")
    scores = evaluate(path)
    assert scores["email"] == {"precision": 1.0, "recall": 1.0, "tp": 1, "fp": 0, "fn": 0}
    assert scores["phone"]["fp"] == 1 and scores["ip"]["fn"] == 1
    assert scores["overall"] == {"precision": 0.5, "recall": 0.5, "tp": 1, "fp": 1, "fn": 1}


def test_the_module_command_prints_scores_and_timing(capsys: pytest.CaptureFixture[str]) -> None:
    main()
    out = capsys.readouterr().out
    assert out.splitlines()[0].split() == ["kind", "precision", "recall", "tp", "fp", "fn"]
    assert any(line.startswith("overall") for line in out.splitlines())
    assert "redact() on 10 KB:" in out
