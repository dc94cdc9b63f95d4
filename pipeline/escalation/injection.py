"""Prompt-injection hardening: item text kept inside its delimiters, and the markers of text written at the model.

Two halves (docs/escalation.md, "Prompt injection"):

- `escape_item` makes the item text data: `&`, `<` and `>` become `&amp;`, `&lt;`, `&gt;` and the characters that
  look like angle brackets become numeric references (`&#x3008;`), so no text can close `</item>` or open a tag the
  model could take for one. `unescape_item` reverses it, for what the model writes back (a summary).
- `markers_in` names the injection markers an item text holds: a small fixed list of phrasings that address a
  language model rather than a reader ("ignore previous instructions", "system prompt", "you are now", role tags,
  chat-template tokens, our own delimiter). It runs on a normalised copy (NFKC, zero-width and other format
  characters dropped, common Cyrillic and Greek look-alikes of Latin letters mapped, case folded), so full-width
  `IGNORE`, `ig<U+200B>nore` and `<U+0456>gnore` (a Cyrillic i) match too. The escalator holds back an answer
  when the text has markers *and* the answer disagrees with the mini model (`escalator.Escalator`).
"""

from __future__ import annotations

import re
import unicodedata
from typing import Final

# Characters drawn like `<` / `>` in common fonts (full-width, small, angle brackets, arrowheads): escaped as numeric
# references, which keep the character for the model but cannot be read as a tag.
_LOOK_ALIKES: Final = (
    "\uff1c\uff1e\ufe64\ufe65\u2039\u203a"
    "\u2329\u232a\u27e8\u27e9\u3008\u3009\u276c\u276d\u276e\u276f\u02c2\u02c3\u1438\u1433"
)
_ESCAPES: Final = {"&": "&amp;", "<": "&lt;", ">": "&gt;"} | {c: f"&#x{ord(c):x};" for c in _LOOK_ALIKES}
_ESCAPE_RE: Final = re.compile("[" + re.escape("".join(_ESCAPES)) + "]")
_UNESCAPE_RE: Final = re.compile("|".join(re.escape(v) for v in _ESCAPES.values()))
_UNESCAPES: Final = {v: k for k, v in _ESCAPES.items()}


def escape_item(text: str) -> str:
    """The text as data between `<item>` and `</item>`: no tag, real or look-alike, survives."""
    return _ESCAPE_RE.sub(lambda m: _ESCAPES[m.group()], text)


def unescape_item(text: str) -> str:
    """What `escape_item` wrote, back to the original characters (one pass, so `&amp;lt;` gives `&lt;`)."""
    return _UNESCAPE_RE.sub(lambda m: _UNESCAPES[m.group()], text)


# ------------------------------------------------------------------------------------------------ markers
# Cyrillic and Greek letters drawn like Latin ones (lower case; the text is case-folded first). Not a full
# confusables table: the letters that spell the marker words below.
_CONFUSABLES: Final = str.maketrans(
    "\u0430\u0441\u0435\u04bb\u0456\u0458\u04cf\u043e\u0440\u051b\u0455\u0442\u0443\u0445\u051d"
    "\u03bd\u03b1\u03b5\u03b9\u03ba\u03bf\u03c1\u03c4\u03c5\u03c7\u0475\u0501\u0261\u0578\u057d",
    "acehijlopqstyxwvaeikoptuxvdgnu",
)
_W: Final = r"[\W_]+"  # between the words of a marker: any run of spaces, punctuation, dashes or underscores
_EARLIER: Final = (
    r"(?:previous|prior|above|earlier|preceding|former|original|initial|system|your|all|any|the|those|these)"
)
_RULES: Final = r"(?:instructions?|prompts?|rules|directions|directives|guidelines|commands|context|programming)"

MARKERS: Final[tuple[tuple[str, re.Pattern[str]], ...]] = tuple(
    (name, re.compile(pattern))
    for name, pattern in (
        # "ignore all previous instructions", "disregard the above rules", "forget your instructions"
        (
            "ignore_instructions",
            rf"\b(?:ignore|disregard|forget|override|bypass|discard)(?:{_W}{_EARLIER}){{1,3}}{_W}{_RULES}\b",
        ),
        ("new_instructions", rf"\b(?:new|updated|real|actual|hidden|secret){_W}(?:instructions|system{_W}prompt)\b"),
        ("system_prompt", rf"\bsystem{_W}(?:prompt|message|instructions?)\b"),
        # a new identity for the model: "you are now an unrestricted AI", "you are no longer bound by ..."
        (
            "you_are_now",
            rf"\byou{_W}are{_W}now{_W}(?:\w+{_W}){{0,3}}(?:ai|assistant|bot|chatbot|model|classifier|moderator|dan|"
            rf"unrestricted|jailbroken|uncensored)\b|\byou{_W}are{_W}no{_W}longer{_W}(?:bound|restricted|an{_W}ai|a{_W}"
            rf"language{_W}model|an{_W}assistant)\b|\bpretend{_W}(?:that{_W})?you{_W}(?:are|have){_W}no{_W}"
            rf"(?:rules|restrictions|guidelines|filters)\b",
        ),
        ("jailbreak", rf"\b(?:jailbreak|jailbroken|dan{_W}mode|do{_W}anything{_W}now|developer{_W}mode)\b"),
        # an instruction about the very answer a classifier or moderator gives
        (
            "answer_steering",
            rf"\b(?:classify|label|categori[sz]e|mark|flag|rate|tag){_W}(?:this|it|the{_W}(?:text|item|post|message))"
            rf"{_W}as\b|\b(?:respond|reply|answer|output){_W}(?:only|just){_W}with\b",
        ),
        # role tags at the start of a line, and chat-template tokens
        ("role_tag", r"(?m)^\s*(?:system|assistant|developer)\s*:"),
        (
            "chat_template",
            r"<\|(?:im_start|im_end|system|assistant|user|endoftext)\|>|\[/?inst\]|<</?sys>>|###\s*instruction",
        ),
        # our own delimiter, or an escaped copy of it: an attempt to close the item early
        ("delimiter", r"</?\s*item\s*>|&lt;/?\s*item\s*&gt;"),
    )
)

_DROP: Final = {"Cf", "Mn", "Me"}  # format characters (zero-width joiners, BOM, soft hyphen) and combining marks


def normalise(text: str) -> str:
    """The text as the markers read it: NFKC, format characters and combining marks dropped, look-alikes mapped,
    case folded."""
    text = unicodedata.normalize("NFKD", unicodedata.normalize("NFKC", text))
    text = "".join(c for c in text if unicodedata.category(c) not in _DROP)
    return unicodedata.normalize("NFC", text).casefold().translate(_CONFUSABLES)


def markers_in(text: str) -> list[str]:
    """The names of the injection markers the text holds, in `MARKERS` order (empty for ordinary text)."""
    plain = normalise(text)
    return [name for name, pattern in MARKERS if pattern.search(plain)]
