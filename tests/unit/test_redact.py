"""Redaction before escalation: each kind found and checked, placeholders stable, originals restored, fast."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from pydantic import ValidationError

from pipeline.escalation.redact import (
    DEFAULT_EVAL_SET,
    DEFAULT_EVAL_SETS,
    PiiKind,
    RedactionSettings,
    _normalise,
    _resolve,
    evaluate,
    iban_valid,
    luhn_valid,
    main,
    recall_by_obfuscation,
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


ZWSP, SHY, NBSP = "\u200b", "\u00ad", "\u00a0"


def fullwidth(text: str) -> str:
    """The full-width (East Asian IME) form of printable ASCII."""
    return "".join(chr(ord(c) + 0xFEE0) if "!" <= c <= "~" else c for c in text)


@pytest.mark.parametrize(
    "value",
    [
        "john at example dot com",
        "John.Smith AT example DOT org",
        "maria dot lopez at mailbox dot co dot uk",
        "john [at] example [dot] com",
        "jane(at)example(dot)org",
        "support{at}helpdesk{dot}io",
        "bob<at>mail<dot>example<dot>com",
        "attacker[@]malicious-domain[.]net",
        "lisa.m [at] example.com",
        "chen_y [ at ] example [ dot ] cn",
        "ella@example[.]com",
        "ella @ example dot com",
    ],
)
def test_spelled_out_and_bracketed_emails_are_found_whole(value: str) -> None:
    """Each spelled or defanged form of an address is one email span, brackets and words included."""
    assert found(f"write to {value} today") == [("email", value)]


@pytest.mark.parametrize(
    "text",
    [
        "Look at this dot product",
        "Visit us at example dot com for opening hours",
        "Jobs at the dot com boom paid well",
        "I'm at work dot net sessions all day",
        "We met at noon dot on time",
        "See [at] least three examples in section [1]",
        "email at [dot] com is not an address",
        "john at example.com",  # a bare "at" needs a spelled or bracketed dot: "look at example.com" is English
        "Defanged domain hxxps://evil[.]example[.]com/login was blocked",
    ],
)
def test_english_with_at_and_dot_is_not_an_email(text: str) -> None:
    """Bare "at"/"dot" in prose, a website, a defanged domain: no personal data, nothing redacted."""
    assert found(text) == []


@pytest.mark.parametrize(
    "value",
    [
        fullwidth("yamada@example.co.jp"),
        "taro\uff20example.jp",
        "josé.garcía@correo.es",
        "пользователь@пример.рф",
        "用户@例子.广告",
        "info@xn--bcher-kva.de",
        "admin@xn--e1afmkfd.xn--p1ai",
        "Ze\u0301lie@exe\u0301mple.fr",
    ],
)
def test_fullwidth_and_internationalised_emails_are_found(value: str) -> None:
    """NFKC folds full-width forms; Unicode letters and punycode labels make a valid address."""
    assert found(f"mail {value} now") == [("email", value)]


def test_an_address_in_unspaced_cjk_text_stops_at_the_script_boundary() -> None:
    """Chinese and Japanese have no spaces: the address is the ASCII run between the Han/kana characters."""
    assert found("请发邮件到wang.fang@example.com谢谢") == [("email", "wang.fang@example.com")]
    assert found("メールはtaro@example.jpまで") == [("email", "taro@example.jp")]


@pytest.mark.parametrize(
    "value",
    [
        "192[.]168[.]1[.]20",
        "198(.)51(.)100(.)7",
        "10{.}20{.}30{.}40",
        "45[dot]33[dot]12[dot]9",
        "172 dot 16 dot 0 dot 12",
        "8.8.8[.]8",
        "66 [.] 249 [.] 66 [.] 1",
    ],
)
def test_defanged_ipv4_addresses_are_found(value: str) -> None:
    """Brackets, parentheses, braces or the word "dot" between valid octets: an IP."""
    assert found(f"seen from {value} today") == [("ip", value)]


def test_an_ip_in_a_defanged_url_is_redacted_and_the_rest_kept() -> None:
    """Only the address is personal data; the scheme, port and path stay for the large model to read."""
    result = redact("IOC: hxxps://185[.]220[.]101[.]4:8443/login")
    assert result.text == "IOC: hxxps://[IP_1]:8443/login"


@pytest.mark.parametrize(
    "text",
    [
        "Firmware 10.2.0.1 is rolling out",
        "driver version 4.1.2.255 fixes audio",
        "Build 1.0.0.12 failed",
        "see section 4.1.1.1 of the spec",
        "§ 1.2.3.4 applies",
        "1[.]2[.]3[.]4[.]5 is five parts",
        "10 dot 1 dot 2 dot 3 dot 4",
        "999[.]1[.]1[.]1 has an octet over 255",
    ],
)
def test_versions_sections_and_longer_dotted_numbers_are_not_ips(text: str) -> None:
    """A plain dotted quad after a version or numbering word is a version; a five-part or invalid one is nothing."""
    assert found(text) == []


def test_a_defanged_quad_after_a_version_word_is_still_an_ip() -> None:
    """Defanging is done to addresses only, so it outweighs the version context."""
    assert found("version 10[.]2[.]0[.]1") == [("ip", "10[.]2[.]0[.]1")]


@pytest.mark.parametrize(
    "value",
    [
        "4111.1111.1111.1111",
        "3714.496353.98431",
        f"4111{NBSP}1111{NBSP}1111{NBSP}1111",
        "5555\u202f5555\u202f5555\u202f4444",
        "4 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1",
        "3-7-8-2-8-2-2-4-6-3-1-0-0-0-5",
        "6.0.1.1.1.1.1.1.1.1.1.1.1.1.1.7",
        fullwidth("4111 1111 1111 1111").replace(fullwidth(" "), "\u3000"),
    ],
)
def test_cards_grouped_by_dots_odd_spaces_or_single_digits_are_found(value: str) -> None:
    """Every separator a person or a word processor puts in a card number; Luhn still decides."""
    assert found(f"card {value} exp 12/28") == [("card", value)]


@pytest.mark.parametrize(
    "text",
    [
        "Serial 1234.5678.9012.3456 fails Luhn",
        "bits 0 1 1 0 1 0 0 1 0 1 1 0 1 0 0 1 of the header",
        "placeholder 0000 0000 0000 0000 in the docs",
        "ref 5 5 5 5 1 2 3 4 read out",
        "price list 4.111, 1.111, 1.111, 1.111 EUR",
    ],
)
def test_digit_runs_that_are_not_cards_even_with_new_separators(text: str) -> None:
    """Luhn failures, leading zeros (no issuer) and short runs stay as they are."""
    assert found(text) == []


@pytest.mark.parametrize(
    "value",
    [
        "DE89-3704-0044-0532-0130-00",
        "GB82-WEST-1234-5698-7654-32",
        "es91-2100-0418-4502-0005-1332",
        "AT61\u20111904\u20113002\u20113457\u20113201",
        f"FR14{NBSP}2004{NBSP}1010{NBSP}0505{NBSP}0001{NBSP}3M02{NBSP}606",
    ],
)
def test_ibans_with_dashes_or_odd_spaces_are_found(value: str) -> None:
    """Dashes (ASCII or non-breaking hyphens) and NBSP between the groups; mod-97 still decides."""
    assert found(f"wire to {value} please") == [("iban", value)]


def test_a_dashed_iban_failing_mod97_and_a_uuid_are_kept() -> None:
    """The dash form adds no false alarms: the check digits still have to be right."""
    assert found("Code DE89-3704-0044-0532-0130-01 and 550e8400-e29b-41d4-a716-446655440000") == []


def test_zero_width_characters_inside_an_email_are_replaced_in_the_original_and_restored_exactly() -> None:
    """Matching sees "john@example.com"; the span covers the original characters, invisibles included."""
    text = f"mail j{ZWSP}ohn@exam\u200dple.com now"
    result = redact(text)
    assert result.text == "mail [EMAIL_1] now"
    assert result.mapping == {"[EMAIL_1]": f"j{ZWSP}ohn@exam\u200dple.com"}
    (span,) = result.spans
    assert (span.start, span.end) == (5, 5 + len(f"j{ZWSP}ohn@exam\u200dple.com"))
    assert restore(result.text, result.mapping) == text


@pytest.mark.parametrize(
    ("text", "kind", "value"),
    [
        (f"card 4111{ZWSP}1111{ZWSP}1111{ZWSP}1111 ok", "card", f"4111{ZWSP}1111{ZWSP}1111{ZWSP}1111"),
        (
            f"wire GB82{SHY}WEST{SHY}1234{SHY}5698{SHY}7654{SHY}32 ok",
            "iban",
            f"GB82{SHY}WEST{SHY}1234{SHY}5698{SHY}7654{SHY}32",
        ),
        (f"call (415) 555-{ZWSP}0132 ok", "phone", f"(415) 555-{ZWSP}0132"),
        (f"from 10.{ZWSP}0.\u20600.5 ok", "ip", f"10.{ZWSP}0.\u20600.5"),
        (f"to li{ZWSP}sa [at] exa{ZWSP}mple [dot] com ok", "email", f"li{ZWSP}sa [at] exa{ZWSP}mple [dot] com"),
    ],
)
def test_zero_width_characters_inside_every_kind(text: str, kind: str, value: str) -> None:
    """Zero-width, word-joiner and soft-hyphen characters do not split a value, and come back on restore."""
    assert found(text) == [(kind, value)]
    result = redact(text)
    assert restore(result.text, result.mapping) == text


def test_zero_width_characters_at_the_edges_stay_outside_the_span() -> None:
    """An invisible character before or after a value is not part of it (and stays in the sent text)."""
    text = f"\ufeffkim@example.net{ZWSP} ok"
    assert found(text) == [("email", "kim@example.net")]
    assert redact(text).text == f"\ufeff[EMAIL_1]{ZWSP} ok"


def test_normalise_maps_every_character_back_to_its_origin() -> None:
    """Full-width, ligatures, combining marks, invisibles and odd hyphens: each normal character knows its source."""
    text = f"\uff41{ZWSP}\ufb01e\u0301\u2011x"  # full-width a, ZWSP, "fi" ligature, e + acute, NB hyphen
    normal = _normalise(text)
    assert normal.text == "afié-x"
    assert normal.starts == [0, 2, 2, 3, 5, 6]
    assert normal.ends == [1, 3, 3, 5, 6, 7]
    assert normal.original(0, 6) == (0, 7)
    assert _normalise("plain ascii").starts is None


def test_the_same_value_with_and_without_a_zero_width_character_gets_two_placeholders() -> None:
    """restore() must give back each original byte for byte, so differently written values are not merged."""
    result = redact(f"a@x.com and a{ZWSP}@x.com")
    assert result.text == "[EMAIL_1] and [EMAIL_2]"
    assert restore(result.text, result.mapping) == f"a@x.com and a{ZWSP}@x.com"


def test_non_breaking_spaces_and_hyphens_in_phones() -> None:
    """A phone typed with NBSP, figure spaces or non-breaking hyphens is found and restored as typed."""
    for value in ("415\u00a0555\u00a00132", "415\u2007555\u20070132", "415\u2011555\u20110132"):
        assert found(f"call {value} now") == [("phone", value)]


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
    "bracketed ats": "a [at] " * 15_000,
    "bare at and dot": "a at b dot " * 10_000,
    "defanged dots": "1[.]" * 25_000,
    "spelled dots between digits": "1 dot " * 17_000,
    "zero-width digits": "1\u200b" * 50_000,
    "full-width digits": "\uff11" * 100_000,
    "nbsp digits": "1\u00a0" * 50_000,
    "non-ascii at signs": "\u00e9@" * 50_000,
    "combining marks": "e\u0301" * 50_000,
    "cjk": "\u4e2d\u6587" * 50_000,
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
    records = [json.loads(line) for path in DEFAULT_EVAL_SETS for line in path.read_text(encoding="utf-8").splitlines()]
    assert len(records) >= 150
    assert sum(not record["pii"] for record in records) >= 40
    kinds = {item["kind"] for record in records for item in record["pii"]}
    assert kinds == {kind.value for kind in PiiKind}
    assert all(item["value"] in record["text"] for record in records for item in record["pii"])
    assert len(records) >= 300 and sum(not record["pii"] for record in records) >= 100
    tags = {item.get("obfuscation", "plain") for record in records for item in record["pii"]}
    assert {"spelled_at", "bracketed", "fullwidth", "idn", "zero_width", "nbsp", "card_dots"} <= tags
    assert {"card_digits", "iban_dashes", "defanged_ip"} <= tags


def test_eval_set_scores_meet_the_bar() -> None:
    scores = evaluate(DEFAULT_EVAL_SETS)
    assert scores["overall"]["recall"] >= 0.95
    assert scores["overall"]["precision"] >= 0.98
    for kind in ("card", "iban", "email"):
        assert scores[kind]["recall"] == 1.0, kind
    for tag, score in recall_by_obfuscation(DEFAULT_EVAL_SETS).items():
        assert score["recall"] >= 0.9, tag


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
    assert "redact() on 10 KB:" in out and "redact() per message:" in out
    assert any(line.startswith("defanged_ip") for line in out.splitlines())
