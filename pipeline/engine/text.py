"""Text hygiene and sentence splitting, before anything reaches the tokenizer."""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

# Control characters other than tab and newline carry no meaning for the model and upset tokenizers.
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u200b-\u200f\u2028\u2029\ufeff]")
_SPACES = re.compile(r"[ \t\r\f\v]+")
# A sentence ends at . ! ? … (and closing quotes/brackets) followed by whitespace, or at a blank line / newline.
_SENTENCE_END = re.compile(r"(?<=[.!?…])[\"'”’)\]]*\s+|\n+")  # noqa: RUF001 - typographic quotes close sentences
_WORDS_ENDING_IN_A_DOT = (
    "mr mrs ms dr prof sr jr st vs etc e.g i.e inc ltd co corp no fig approx dept est gen gov a.m p.m"
)
_ABBREVIATIONS = frozenset(_WORDS_ENDING_IN_A_DOT.split())


@dataclass(frozen=True)
class CleanText:
    text: str
    truncated: bool


def clean(text: str, max_chars: int) -> CleanText:
    """Normalise Unicode, drop control characters, squeeze spaces; cut at `max_chars` and say so."""
    text = unicodedata.normalize("NFC", text)
    text = _CONTROL.sub(" ", text)
    text = _SPACES.sub(" ", text)
    text = "\n".join(line.strip() for line in text.split("\n")).strip()
    if len(text) > max_chars:
        return CleanText(text[:max_chars], truncated=True)
    return CleanText(text, truncated=False)


def split_sentences(text: str) -> list[str]:
    """Split into sentences; abbreviations such as "Dr." and decimals do not end one."""
    pieces: list[str] = []
    start = 0
    for match in _SENTENCE_END.finditer(text):
        candidate = text[start : match.start()].strip()
        if not candidate:
            start = match.end()
            continue
        last_word = candidate.rsplit(None, 1)[-1].rstrip(".").lower()
        if "\n" not in match.group() and last_word in _ABBREVIATIONS:
            continue
        pieces.append(candidate)
        start = match.end()
    tail = text[start:].strip()
    if tail:
        pieces.append(tail)
    return pieces
