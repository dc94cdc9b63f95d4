"""Redaction of personal data before text leaves for the large model, and restoration of its answer."""

from __future__ import annotations

import ipaddress
import itertools
import json
import re
import statistics
import time
import unicodedata
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict


class PiiKind(StrEnum):
    """The kinds of personal data the redactor knows; the value is the label used in the eval set."""

    EMAIL = "email"
    PHONE = "phone"
    CARD = "card"
    IBAN = "iban"
    IP = "ip"
    ADDRESS = "address"


class RedactionSettings(BaseModel):
    """Which kinds are redacted; everything is on unless a deployment turns a kind off on purpose."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    email: bool = True
    phone: bool = True
    card: bool = True
    iban: bool = True
    ip: bool = True
    address: bool = True

    def enabled(self, kind: PiiKind) -> bool:
        return bool(getattr(self, kind.value))


@dataclass(frozen=True, slots=True)
class RedactedSpan:
    """One redacted stretch of the original text: [start, end) and the placeholder that replaced it."""

    kind: PiiKind
    start: int
    end: int
    placeholder: str


@dataclass(frozen=True, slots=True)
class Redacted:
    """Text safe to send, where it came from, and the placeholder → original mapping that must stay here."""

    text: str
    spans: tuple[RedactedSpan, ...]
    # Never part of the repr: a stray log line of this object must not print the originals.
    mapping: dict[str, str] = field(repr=False)


# Ties between equally long overlapping candidates go to the kind with the stronger check.
_PRIORITY = {
    PiiKind.IBAN: 0,
    PiiKind.CARD: 1,
    PiiKind.EMAIL: 2,
    PiiKind.IP: 3,
    PiiKind.PHONE: 4,
    PiiKind.ADDRESS: 5,
}
_PLACEHOLDER_NAME = {kind: kind.value.upper() for kind in PiiKind}
_PLACEHOLDER = re.compile(r"\[(?:EMAIL|PHONE|CARD|IBAN|IP|ADDRESS)_\d+\]")

# Every pattern has a negative lookbehind so a long run of like characters offers one starting point,
# not one per character, and uses possessive or bounded repeats: no pattern can backtrack more than a
# constant amount per position (tested on 100 KB adversarial input). Where it can, a pattern opens with
# a character class (or a lookahead for one) before the lookbehind: the regex engine then skips ahead
# to those characters instead of testing the lookbehind at every position, 2-5x faster on prose.
# Local part and labels take any letter or digit (internationalised addresses, after NFKC); the TLD is letters
# or an IDNA "xn--" label.
_LABEL = r"[^\W_](?:(?:[^\W_]|-){0,61}[^\W_])?"
# An ASCII TLD ends where ASCII ends, so "a@example.com谢谢" (no space in Chinese) stops at "com".
_TLD = r"(?:[Xx][Nn]--[A-Za-z0-9-]{2,59}(?![\w-])|[A-Za-z]{2,24}(?![A-Za-z0-9-])|[^\W\d_A-Za-z]{2,24}(?![\w-]))"
# Found from each "@": the domain forward, the local part (at most 128 characters) backward on the reversed text;
# a Unicode class at the front of a pattern would be tried at every word character, 5-10x slower on prose.
_EMAIL_DOMAIN = re.compile(rf"(?:{_LABEL}\.){{1,8}}{_TLD}")
_REVERSED_EMAIL_LOCAL = re.compile(r"[\w.%+-]{1,128}(?![\w.%+-])")
# Han, kana and Hangul are written without spaces: "请发到john@example.com" has its address after the last of them.
_CJK = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff]")
# Spelled-out and defanged addresses: "john at example dot com", "john [at] example [dot] com", "john(@)x(.)org".
# An "at" is found first; the domain is matched forward from it and the local part backward (on the reversed
# text), so the cost is bounded per "at" however long the text.
_OPEN, _CLOSE = r"[\[({<]", r"[\])}>]"
# Each search pattern opens with a character class and no (?i), which lets the engine skip to those characters
# instead of trying every position; spaces before a match are taken afterwards (_spelled_emails).
_AT = re.compile(rf"(?:{_OPEN}[ ]?(?:[Aa][Tt]|@)[ ]?{_CLOSE}|@)[ ]?")
_BARE_AT = re.compile(r"[Aa][Tt](?<=[ ][Aa][Tt])[ ]+")
_DOT = rf"(?:[ ]?{_OPEN}[ ]?(?:dot|\.)[ ]?{_CLOSE}[ ]?|[ ]+dot[ ]+|\.)"
_SPELLED_DOMAIN = re.compile(
    rf"(?i)(?P<domain>{_LABEL}(?:{_DOT}{_LABEL}){{0,7}})(?P<dot>{_DOT})(?P<tld>{_TLD})(?!{_DOT}[^\W_])"
)
# The local part, reversed: words joined by ".", "[dot]" or " dot " read right to left.
_REVERSED_LOCAL = re.compile(
    rf"(?i)[\w%+-]{{1,64}}(?:(?:[ ]?{_CLOSE}[ ]?(?:tod|\.)[ ]?{_OPEN}[ ]?|[ ]+tod[ ]+|\.)[\w%+-]{{1,64}}){{0,4}}"
    r"(?![\w.%+'\u2019-])"  # not part of a longer word, nor "I'm at ..."
)
_OBFUSCATION_HINT = re.compile(
    rf"{_OPEN}[ ]?(?:[Aa][Tt]|@|[Dd][Oo][Tt]|\.)[ ]?{_CLOSE}|[Dd][Oo][Tt](?<=[ ][Dd][Oo][Tt])[ ]|@(?<=[ ]@)|@[ ]"
)


def _words(words: str) -> frozenset[str]:
    return frozenset(words.split())


# A bare " at " with a bare " dot " is also ordinary English ("look at this dot product", "visit us at example dot
# com"): then the word before "at" must not be a common word, the first label not an article, and the TLD a known one.
_PLAIN_AT_STOPWORDS = _words(
    "us me him her them you it we they look visit find reach see here there online site website page available "
    "located live lives work works working based stay out email mail write contact jobs careers anyone someone "
    "everyone people shop buy sold order sign join apply meet"
)
_ARTICLES = _words("the a an this that our your my his her their its")
_SPELLED_TLDS = _words(
    "com net org edu gov mil int io co uk de fr es nl ru jp cn au ca ch se pl br mx info biz ai app dev eu ie nz za "
    "kr tw hk sg dk fi cz pt gr hu ro ar cl mobi name pro online xyz"
)
_PHONE = re.compile(
    r"(?=[+(\d])(?<![\w+])(?:"
    # international: +CC then groups; digits are counted afterwards (E.164 allows at most 15)
    r"\+\d{1,3}(?:[ .-]?(?:\(\d{1,4}\)|\d++)){1,6}"
    # North American: (415) 555-0132, 415-555-0132, 415.555.0132, 1-800-555-0199
    r"|(?:1[ .-])?(?:\(\d{3}\)[ ]?\d{3}[ .-]\d{4}|\d{3}([ .-])\d{3}\1\d{4})"
    # national numbers with a trunk 0: 020 7946 0958, (020) 7946 0958, 07700 900123
    r"|(?:\(0\d{1,4}\)[ ]?|0\d{1,4}[ -])\d{3,4}(?:[ -]?\d{3,4})?"
    r")(?![\w])"
)
_CARD = re.compile(
    r"\d(?<!\d\d)(?<!\d{4}[ .-]\d)(?:"
    r"\d{3}([ .-]?)\d{4}\1\d{4}\1\d{4}(?:\1\d{3})?"  # 16 or 19 digits in groups of four
    r"|\d{3}([ .-]?)\d{6}\2\d{4,5}"  # Amex 4-6-5, Diners 4-6-4
    r"|\d{12,18}"
    # one digit at a time ("4 1 1 1 1 1 …"), not a slice of a longer such run
    r"|(?<!\d[ .-]\d)([ .-])\d(?:\3\d){11,17}(?!\3\d)"
    r")(?!\d|[ .-]\d{4})"  # not a slice of a longer number grouped in fours
)
_IBAN = re.compile(
    r"\d\d(?<=(?<![A-Za-z0-9])[A-Za-z]{2}\d\d)(?:[ -]?[A-Z0-9]{4}){2,7}(?:[ -]?[A-Z0-9]{1,3})?",
    re.IGNORECASE,
)
# Dotted quads, also defanged: "192[.]168[.]1[.]20", "10(dot)0(dot)0(dot)1", "10 dot 0 dot 0 dot 1".
_IP_DOT = r"(?:\.|[ ]?[\[({][ ]?(?:\.|dot)[ ]?[\])}][ ]?|[ ]dot[ ])"
_IPV4 = re.compile(
    # not the tail of a longer plain or defanged dotted number ("1[.]2[.]3[.]4[.]5")
    r"(?i)\d(?<![\w.]\d)(?<!\.[\])}]\d)(?<!\.[\])}][ ]\d)(?<!dot[\])}]\d)(?<!dot[\])}][ ]\d)(?<!dot[ ]\d)"
    rf"\d{{0,2}}{_IP_DOT}(?:\d{{1,3}}{_IP_DOT}){{2}}\d{{1,3}}(?!\.?\w|{_IP_DOT}\d)"
)
# A plain dotted quad right after a version or numbering word is a version or a section number ("firmware
# 10.2.0.1", "section 4.1.1.1"), not an address.
_VERSION_CONTEXT = re.compile(
    r"(?i)(?:\b(?:version|ver\.?|build|release|firmware|fw|rev\.?|revision|patch|driver|sdk|kernel|v"
    r"|section|sec\.?|chapter|clause|paragraph|para\.?|article|art\.?|step|figure|fig\.?|table)|§)[ ]*[:#]?[ ]*$"
)
_IPV6 = re.compile(r"(?<![\w:.])(?:[0-9A-Fa-f]{0,4}:){2,7}(?:(?:\d{1,3}\.){3}\d{1,3}|[0-9A-Fa-f]{1,4})?(?![\w:]|\.\w)")
# Any IPv6 address has two colons with at most four hex digits between them; most text has none, so the
# full pattern is tried only at the start of the hex/colon run around such a hint.
_IPV6_HINT = re.compile(r":[0-9A-Fa-f]{0,4}:")
_IPV6_RUN = re.compile(r"[0-9A-Fa-f:.]*")
_IPV6_CHARS = frozenset("0123456789abcdefABCDEF:.")
_STREET_WORDS = "Street|Avenue|Road|Boulevard|Lane|Drive|Court|Place|Square|Terrace|Way|Parkway|Highway|Close|Crescent"
_STREET_ABBREVIATIONS = "St|Ave|Rd|Blvd|Ln|Dr|Ct|Pl|Sq|Ter|Pkwy|Hwy|Cres"
_ADDRESS = re.compile(
    r"\d(?<![\w.,/:$#-]\d)\d{0,4}[A-Za-z]?(?:-\d{1,5})?[ ]+"
    # one to four street-name words: capitalised (Baker, O'Connell, Jr.) or an ordinal (5th)
    r"(?:(?:[A-Z][A-Za-z'\u2019]*+\.?|\d{1,3}(?:st|nd|rd|th))[ ]+){1,4}"
    rf"(?:(?:{_STREET_WORDS})\b|(?:{_STREET_ABBREVIATIONS})\b\.?)"
    r"(?:[ ]+(?:NW|NE|SW|SE)\b)?"
    r"(?:,?[ ]+(?:Apt|Apartment|Suite|Ste|Unit|Flat)\.?[ ]*+#?[A-Za-z0-9-]{1,6}\b)?"
)


_NON_DIGIT = re.compile(r"\D")
_DIGIT_RUN = re.compile(r"\d+")
_LOCAL_WORD = re.compile(r"[\w%+-]+")
_SPELLED_DOT = re.compile(rf"{_OPEN}|[Dd][Oo][Tt](?<=[ ][Dd][Oo][Tt])[ ]")
_IBAN_LETTER_VALUES = str.maketrans({chr(ord("A") + i): str(10 + i) for i in range(26)})


def luhn_valid(digits: str) -> bool:
    """The Luhn checksum that every payment card number carries in its last digit."""
    if not digits.isdigit():
        return False
    total = 0
    for index, char in enumerate(reversed(digits)):
        value = int(char)
        if index % 2:
            value = value * 2 - 9 if value > 4 else value * 2
        total += value
    return total % 10 == 0


def iban_valid(iban: str) -> bool:
    """ISO 13616: move the first four characters to the end, letters to 10..35, and the number mod 97 is 1."""
    compact = iban.replace(" ", "").replace("-", "").upper()
    if not (15 <= len(compact) <= 34 and compact[:2].isalpha() and compact[2:4].isdigit() and compact.isalnum()):
        return False
    if not compact.isascii():
        return False
    rearranged = compact[4:] + compact[:4]
    return int(rearranged.translate(_IBAN_LETTER_VALUES)) % 97 == 1


def _cards(text: str) -> Iterator[tuple[int, int]]:
    pos = 0
    while match := _CARD.search(text, pos):
        value = match.group(0)
        candidates = [value]
        if match.group(1) is not None and len(value) - 4 * len(match.group(1)) == 19:
            # "4111 1111 1111 1111 203.0.113.9": the optional 19-digit tail may be the next number's start.
            candidates.append(value[: -3 - len(match.group(1))])
        # Issuer numbers never start with 0; an all-zero run would otherwise pass Luhn.
        valid = next((c for c in candidates if c[0] != "0" and luhn_valid(_NON_DIGIT.sub("", c))), None)
        if valid is not None:
            yield match.start(), match.start() + len(valid)
            pos = match.start() + len(valid)
        else:
            # A failed check must not hide a valid number that starts inside the rejected one.
            pos = match.start() + 1


def _ibans(text: str) -> Iterator[tuple[int, int]]:
    pos = 0
    while match := _IBAN.search(text, pos):
        # The match opens at the check digits (see the pattern); the country code sits just before them.
        start = match.start() - 2
        candidate = text[start : match.end()]
        # The greedy match may run into a following word ("... 0130 00 TO"); try group boundaries, longest first.
        ends = [len(candidate)] + [i for i in range(len(candidate) - 1, 0, -1) if candidate[i] in " -"]
        found = next((end for end in ends if iban_valid(candidate[:end])), None)
        if found is not None:
            yield start, start + found
            pos = start + found
        else:
            pos = match.start() + 1


def _emails(text: str) -> Iterator[tuple[int, int]]:
    at = text.find("@")
    while at != -1:
        domain = _EMAIL_DOMAIN.match(text, at + 1)
        local = _REVERSED_EMAIL_LOCAL.match(text[max(0, at - 129) : at][::-1]) if domain else None
        if domain is not None and local is not None:
            start = at - local.end()
            if not text.isascii():
                # "请发到john@example.com": the address starts after the last Han/kana/Hangul character.
                ascii_from = at
                while ascii_from > start and text[ascii_from - 1].isascii():
                    ascii_from -= 1
                if start < ascii_from < at and _CJK.match(text, ascii_from - 1):
                    start = ascii_from
            yield start, domain.end()
        at = text.find("@", at + 1)
    if _OBFUSCATION_HINT.search(text):
        yield from _spelled_emails(text)


def _spelled_emails(text: str) -> Iterator[tuple[int, int]]:
    ats: Iterator[re.Match[str]] = _AT.finditer(text)
    if _SPELLED_DOT.search(text):
        # A bare " at " counts only with a spelled or bracketed dot after it, so without one it is not looked for.
        ats = itertools.chain(ats, _BARE_AT.finditer(text))
    for at in ats:
        domain = _SPELLED_DOMAIN.match(text, at.end())
        if domain is None:
            continue
        at_start = at.start()
        while at_start > 0 and text[at_start - 1] == " ":
            at_start -= 1
        local = _REVERSED_LOCAL.match(text[max(0, at_start - 200) : at_start][::-1])
        if local is None:
            continue
        if at.group(0).strip().lower() == "at":
            # A bare " at " needs a spelled or bracketed dot after it, and must not read as English.
            word = _LOCAL_WORD.match(local.group(0))
            first_label = _LOCAL_WORD.match(domain.group("domain"))
            if (
                not _SPELLED_DOT.search(domain.group(0))
                or (word is not None and word.group(0)[::-1].lower() in _PLAIN_AT_STOPWORDS)
                or (first_label is not None and first_label.group(0).lower() in _ARTICLES)
            ):
                continue
        if domain.group("dot").strip().lower() == "dot" and domain.group("tld").lower() not in _SPELLED_TLDS:
            continue
        yield at_start - local.end(), domain.end()


def _phones(text: str) -> Iterator[tuple[int, int]]:
    for match in _PHONE.finditer(text):
        value = match.group(0)
        digits = sum(char.isdigit() for char in value)
        if value.startswith("+"):
            if 8 <= digits <= 15:
                yield match.start(), match.end()
        elif 9 <= digits <= 11:
            yield match.start(), match.end()


def _ips(text: str) -> Iterator[tuple[int, int]]:
    for match in _IPV4.finditer(text):
        value = match.group(0)
        octets = _DIGIT_RUN.findall(value)
        try:
            # Rejects octets over 255 and leading zeros (which some parsers read as octal).
            ipaddress.IPv4Address(".".join(octets))
        except ValueError:
            continue
        defanged = len(value) != sum(map(len, octets)) + 3
        if not defanged and _VERSION_CONTEXT.search(text, max(0, match.start() - 24), match.start()):
            continue
        yield match.start(), match.end()
    yield from _ipv6s(text)


def _ipv6s(text: str) -> Iterator[tuple[int, int]]:
    pos = 0
    while hint := _IPV6_HINT.search(text, pos):
        start = hint.start()
        while start > pos and text[start - 1] in _IPV6_CHARS:
            start -= 1
        # Each run is visited once: the backward walk stops at the previous run's end, the search resumes after it.
        run = _IPV6_RUN.match(text, hint.start())
        pos = max(run.end() if run else 0, hint.start() + 1)
        match = _IPV6.match(text, start)
        if match is None:
            continue
        value = match.group(0)
        # A colon that ends a sentence ("... 2001:db8::1: refused") is punctuation, not part of the address.
        for candidate in (value, value[:-1]) if value.endswith(":") and not value.endswith("::") else (value,):
            try:
                ipaddress.IPv6Address(candidate)
            except ValueError:
                continue
            yield match.start(), match.start() + len(candidate)
            break


def _addresses(text: str) -> Iterator[tuple[int, int]]:
    for match in _ADDRESS.finditer(text):
        yield match.start(), match.end()


_FINDERS: dict[PiiKind, Callable[[str], Iterator[tuple[int, int]]]] = {
    PiiKind.EMAIL: _emails,
    PiiKind.PHONE: _phones,
    PiiKind.CARD: _cards,
    PiiKind.IBAN: _ibans,
    PiiKind.IP: _ips,
    PiiKind.ADDRESS: _addresses,
}


def _resolve(candidates: list[tuple[PiiKind, int, int]], length: int) -> list[tuple[PiiKind, int, int]]:
    """Keep non-overlapping spans: longest first, then the kind with the stronger check, then the earliest."""
    candidates.sort(key=lambda c: (c[1] - c[2], _PRIORITY[c[0]], c[1]))
    covered = bytearray(length)
    kept: list[tuple[PiiKind, int, int]] = []
    for kind, start, end in candidates:
        if covered.find(1, start, end) == -1:
            covered[start:end] = b"\x01" * (end - start)
            kept.append((kind, start, end))
    kept.sort(key=lambda c: c[1])
    return kept


# Characters that hide inside a value without showing: zero-width space/non-joiner/joiner, word joiner,
# invisible operators, BOM/zero-width no-break space, soft hyphen, combining grapheme joiner, Mongolian vowel
# separator, left-to-right and right-to-left marks. They are dropped before matching.
_INVISIBLE = frozenset("\u00ad\u034f\u180e\u200b\u200c\u200d\u200e\u200f\u2060\u2061\u2062\u2063\u2064\ufeff")
# Spaces and hyphens NFKC leaves alone (or maps to another non-ASCII character) that people type inside numbers.
_AS_ASCII = {"\u1680": " ", "\u2010": "-", "\u2011": "-", "\u2012": "-", "\u2013": "-", "\u2212": "-", "\ufe63": "-"}
_NON_ASCII_RUN = re.compile(r"[^\x00-\x7f]+")


@dataclass(frozen=True, slots=True)
class _Normalised:
    """Text as matched (NFKC, invisibles dropped, odd spaces and hyphens made ASCII) and where each char came from.

    `starts[i]`/`ends[i]` bound the original characters that produced normalised character i (one character,
    or a base with its combining marks); None when the text is its own normal form (all ASCII, the usual case).
    """

    text: str
    starts: list[int] | None
    ends: list[int] | None

    def original(self, start: int, end: int) -> tuple[int, int]:
        """The original [start, end) behind normalised [start, end): invisibles inside a value stay inside it."""
        if self.starts is None or self.ends is None:
            return start, end
        return self.starts[start], self.ends[end - 1]


def _normalise(text: str) -> _Normalised:
    if text.isascii():
        return _Normalised(text, None, None)
    pieces: list[str] = []
    starts: list[int] = []
    ends: list[int] = []
    cursor = 0
    for run in _NON_ASCII_RUN.finditer(text):
        first, last = run.span()
        if unicodedata.combining(text[first]) and first > cursor:
            first -= 1  # a combining mark belongs to the ASCII letter before it ("e" + U+0301)
        pieces.append(text[cursor:first])
        starts.extend(range(cursor, first))
        ends.extend(range(cursor + 1, first + 1))
        chunk = text[first:last]
        if unicodedata.is_normalized("NFKC", chunk) and not any(c in _INVISIBLE or c in _AS_ASCII for c in chunk):
            pieces.append(chunk)
            starts.extend(range(first, last))
            ends.extend(range(first + 1, last + 1))
        else:
            index = first
            while index < last:
                stop = index + 1
                while stop < last and unicodedata.combining(text[stop]):
                    stop += 1
                char = text[index]
                if char in _INVISIBLE and stop == index + 1:
                    index = stop
                    continue
                out = _AS_ASCII.get(char) if stop == index + 1 else None
                if out is None:
                    out = unicodedata.normalize("NFKC", text[index:stop])
                pieces.append(out)
                starts.extend([index] * len(out))
                ends.extend([stop] * len(out))
                index = stop
        cursor = last
    pieces.append(text[cursor:])
    starts.extend(range(cursor, len(text)))
    ends.extend(range(cursor + 1, len(text) + 1))
    return _Normalised("".join(pieces), starts, ends)


def redact(text: str, settings: RedactionSettings | None = None) -> Redacted:
    """Replace personal data with numbered placeholders; the same value gets the same placeholder."""
    settings = settings or RedactionSettings()
    # Matching runs on the normal form, so full-width digits, NBSP-grouped cards and zero-width characters inside
    # an address are seen as what they read as; the spans are mapped back and the ORIGINAL characters replaced,
    # so restore() gives back exactly what was there.
    normal = _normalise(text)
    candidates = [
        (kind, start, end)
        for kind, find in _FINDERS.items()
        if settings.enabled(kind)
        for start, end in find(normal.text)
    ]
    # A placeholder already present in the input must not be reused, or restore() would rewrite it.
    taken = set(_PLACEHOLDER.findall(text))
    counters: Counter[PiiKind] = Counter()
    by_value: dict[tuple[PiiKind, str], str] = {}
    mapping: dict[str, str] = {}
    spans: list[RedactedSpan] = []
    pieces: list[str] = []
    cursor = 0
    for kind, normal_start, normal_end in _resolve(candidates, len(normal.text)):
        start, end = normal.original(normal_start, normal_end)
        # Two values out of one expanded character (a ligature) cannot both be replaced: the first keeps it.
        start = max(start, cursor)
        if start >= end:
            continue
        value = text[start:end]
        placeholder = by_value.get((kind, value))
        if placeholder is None:
            while True:
                counters[kind] += 1
                placeholder = f"[{_PLACEHOLDER_NAME[kind]}_{counters[kind]}]"
                if placeholder not in taken:
                    break
            by_value[kind, value] = placeholder
            mapping[placeholder] = value
        spans.append(RedactedSpan(kind, start, end, placeholder))
        pieces += (text[cursor:start], placeholder)
        cursor = end
    pieces.append(text[cursor:])
    return Redacted(text="".join(pieces), spans=tuple(spans), mapping=mapping)


def restore(text: str, mapping: dict[str, str]) -> str:
    """Put the originals back into the large model's answer; placeholders it invented are left as they are."""
    # One pass, so an original that itself looks like a placeholder is never substituted again.
    return _PLACEHOLDER.sub(lambda match: mapping.get(match.group(0), match.group(0)), text)


def _ratio(numerator: int, denominator: int) -> float:
    # No predictions (or no labels) of a kind is neither a miss nor a false alarm.
    return numerator / denominator if denominator else 1.0


EvalSet = Path | str | Sequence[Path | str]


def _records(paths: EvalSet) -> Iterator[dict[str, Any]]:
    for path in [paths] if isinstance(paths, Path | str) else paths:
        with Path(path).open(encoding="utf-8") as stream:
            for line in stream:
                if line.strip():
                    yield json.loads(line)


def evaluate(path: EvalSet) -> dict[str, dict[str, float]]:
    """Per-kind and overall precision/recall on labeled JSON-lines file(s); a hit needs kind and exact text."""
    true_pos: Counter[str] = Counter()
    false_pos: Counter[str] = Counter()
    false_neg: Counter[str] = Counter()
    for record in _records(path):
        text = record["text"]
        expected = Counter((item["kind"], item["value"]) for item in record["pii"])
        found = Counter((span.kind.value, text[span.start : span.end]) for span in redact(text).spans)
        for (kind, _), count in (expected & found).items():
            true_pos[kind] += count
        for (kind, _), count in (found - expected).items():
            false_pos[kind] += count
        for (kind, _), count in (expected - found).items():
            false_neg[kind] += count
    scores: dict[str, dict[str, float]] = {}
    for kind in [*(k.value for k in PiiKind), "overall"]:
        tp, fp, fn = (
            (sum(c.values()) for c in (true_pos, false_pos, false_neg))
            if kind == "overall"
            else (true_pos[kind], false_pos[kind], false_neg[kind])
        )
        scores[kind] = {
            "precision": _ratio(tp, tp + fp),
            "recall": _ratio(tp, tp + fn),
            "tp": tp,
            "fp": fp,
            "fn": fn,
        }
    return scores


def recall_by_obfuscation(path: EvalSet) -> dict[str, dict[str, float]]:
    """Recall per `obfuscation` tag of the labeled values (values without a tag are "plain")."""
    hits: Counter[str] = Counter()
    totals: Counter[str] = Counter()
    for record in _records(path):
        text = record["text"]
        found = Counter((span.kind.value, text[span.start : span.end]) for span in redact(text).spans)
        for item in record["pii"]:
            tag = item.get("obfuscation", "plain")
            totals[tag] += 1
            if found[item["kind"], item["value"]] > 0:
                found[item["kind"], item["value"]] -= 1
                hits[tag] += 1
    return {
        tag: {"recall": _ratio(hits[tag], totals[tag]), "tp": hits[tag], "fn": totals[tag] - hits[tag]}
        for tag in sorted(totals)
    }


_DATA = Path(__file__).resolve().parent.parent / "data"
DEFAULT_EVAL_SET = _DATA / "redaction_eval.jsonl"
# The obfuscations and their hard negatives live in a file of their own: redaction_eval.jsonl is also int8
# calibration text (pipeline/engine/quantize.py), and adding to it would change the model a fresh build makes.
OBFUSCATION_EVAL_SET = _DATA / "redaction_eval_obfuscations.jsonl"
DEFAULT_EVAL_SETS = (DEFAULT_EVAL_SET, OBFUSCATION_EVAL_SET)


def time_per_10kb(path: EvalSet = DEFAULT_EVAL_SET, repeats: int = 50) -> float:
    """Median seconds to redact 10 KB built from the eval set's messages (realistic PII density)."""
    text = "\n".join(record["text"] for record in _records(path))
    while len(text) < 10_000:
        text += "\n" + text
    text = text[:10_000]
    samples = []
    for _ in range(repeats):
        began = time.perf_counter()
        redact(text)
        samples.append(time.perf_counter() - began)
    return statistics.median(samples)


def time_per_message(path: EvalSet = DEFAULT_EVAL_SETS, repeats: int = 20) -> float:
    """Median seconds per message to redact every message of the eval set once (one escalated item each)."""
    messages = [record["text"] for record in _records(path)]
    samples = []
    for _ in range(repeats):
        began = time.perf_counter()
        for message in messages:
            redact(message)
        samples.append((time.perf_counter() - began) / len(messages))
    return statistics.median(samples)


def main() -> None:
    scores = evaluate(DEFAULT_EVAL_SETS)
    print(f"{'kind':<8} {'precision':>9} {'recall':>7} {'tp':>4} {'fp':>4} {'fn':>4}")
    for kind, score in scores.items():
        print(
            f"{kind:<8} {score['precision']:>9.3f} {score['recall']:>7.3f} "
            f"{score['tp']:>4.0f} {score['fp']:>4.0f} {score['fn']:>4.0f}"
        )
    print(f"\n{'obfuscation':<14} {'recall':>7} {'tp':>4} {'fn':>4}")
    for tag, score in recall_by_obfuscation(DEFAULT_EVAL_SETS).items():
        print(f"{tag:<14} {score['recall']:>7.3f} {score['tp']:>4.0f} {score['fn']:>4.0f}")
    print(f"\nredact() per message: {time_per_message() * 1e6:.0f} us (median of 20 passes over the set)")
    print(f"redact() on 10 KB: {time_per_10kb() * 1000:.2f} ms (median of 50)")


if __name__ == "__main__":
    main()
