"""The language task: tell text in a supported language (English) from text the mini model cannot read.

The mini model is English-only; a post in another language would get a classification with false
confidence. `LanguageIdentifier` scores a batch of texts with py3langid (langid.py's naive Bayes over byte
n-grams; the model ships inside the wheel, nothing is fetched at run time) and says, per text, which language
it is in, how sure it is, and whether the mini model supports it. Only a text that is long enough and
confidently in no supported language is `supported=False` (reason `language.unsupported`); short or
uninformative text (a few words, emoji, links, hashtags, numbers) is `und` and supported, so it is never
escalated for its language. Thresholds, how they were tuned and the measured figures: docs/language.md.
"""

from __future__ import annotations

import html
import re
import threading
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

import numpy as np
from numpy.typing import NDArray

from pipeline.models import Language
from pipeline.settings import Settings
from pipeline.tasks.base import Batch, NotAskedOfLargeModel

if TYPE_CHECKING:
    from py3langid.langid import LanguageIdentifier as _Py3LangId

    from pipeline.engine.encoder import Encoder

UNDETERMINED = "und"
REASON_UNSUPPORTED = "language.unsupported"
REASON_UNDETERMINED = "language.undetermined"  # too little text to tell
REASON_LOW_CONFIDENCE = "language.low_confidence"  # looks unsupported, not sure enough to say so

# Defaults tuned on ../shared/data and Debian's message catalogs and fortunes: docs/language.md.
DEFAULT_SUPPORTED: tuple[str, ...] = ("en",)
DEFAULT_MIN_CONFIDENCE = 0.999
DEFAULT_MIN_CHARS = 15
# py3langid's probabilities are under-confident (0.6 is right 90% of the time); raising them to 1/0.5 and
# renormalising made the top-1 probability match its accuracy (calibration error 0.081 -> 0.011 held out).
DEFAULT_TEMPERATURE = 0.5
# Enough text to tell any language; the rest of a long document only costs time.
MAX_SCAN_CHARS = 4000

# Removed before identification: they say nothing about the language, or say "English" whatever the language
# (URLs, @handles, hashtags).
_URL = re.compile(r"(?:\b[a-z][a-z0-9+.-]*://|\bwww\.)\S+", re.IGNORECASE)
_EMAIL = re.compile(r"\b[\w.+-]+@[\w-]+\.[\w.-]+\b")
_MENTION = re.compile(r"(?<!\w)@\w+")
_HASHTAG = re.compile(r"(?<!\w)#\w+")  # names and run-together slogans, not sentences: #MAGA, #Marina4Kalaignar
_RETWEET = re.compile(r"^\s*RT\b:?")
# English chat laughter, which the model reads as Sesotho or Guarani ("hahaha", "hehe", "lol", "lmao");
# "jaja" (Spanish) and "kkkk" (Portuguese) stay: there they are evidence for the language.
_LAUGHTER = re.compile(r"\b(?:a?(?:ha){2,}h?|(?:he){2,}h?|ha(?:\s+ha)+|lo+l+|lmf?a+o+|rofl)\b", re.IGNORECASE)
# Capitalised Latin words with letters beyond ASCII: in English text these are names (Jürgen, Núñez, Córdoba),
# and their bytes alone made py3langid call English sentences German or Spanish. A German or Spanish text keeps
# its lower-case words, which say the language as well; a sentence's first word is kept.
_SENTENCE_END = frozenset('.!?¿¡:;"«»„“”()')
_LATIN_WORD = re.compile(r"(?<!\w)[A-Za-z\u00c0-\u024f\u1e00-\u1eff]+(?!\w)")
_STRETCHED = re.compile(r"(\w)\1{2,}")  # "soooo", "yesss": social spelling, not the language's
_SPACE = re.compile(r"\s+")
# Letters and marks stay, and the punctuation of ordinary sentences, which the n-gram model saw in training;
# digits, emoji and other symbols go.
# (escaped: the right single quote and the CJK full stop, commas, exclamation and question marks)
_KEPT_PUNCTUATION = frozenset(" '.,;:!?¿¡()-\"«»„“”\u2019\u3002\uff0c\u3001\uff01\uff1f")
# One CJK character carries about a word (a Latin letter a fifth of one): counted as several letters, a short
# Chinese or Japanese sentence is long enough to identify, while two or three characters are not.
CJK_LETTER_WEIGHT = 3

# The model's label for text with no linguistic content (what clean_text leaves of junk): reported as und.
NO_LANGUAGE = "zxx"
# The model's dialects and varieties, reported as the ISO 639-1 language they belong to.
_FOLDED = {"ary": "ar", "arz": "ar", "yue": "zh", "wuu": "zh", "uzs": "uz", "gug": "gn"}


@dataclass(frozen=True)
class LanguageScore:
    """What the model says of one text, before thresholds: the evaluation sweeps thresholds over these."""

    code: str  # the most probable language; "und" when the text was too short to score
    probability: float  # the probability of `code`
    unsupported: float  # the probability that the text is in none of the supported languages
    letters: int  # letter_count of the cleaned text


class LanguageIdentifier:
    """Identify the language of each text of a batch; unsupported only when confidently so.

    Cheap to construct. The py3langid model (0.6 s to decompress) is loaded once per process, on the first
    batch or on `warm()`, and shared; scoring only reads it, so one identifier serves a thread pool.
    """

    def __init__(
        self,
        supported: Sequence[str] = DEFAULT_SUPPORTED,
        *,
        min_confidence: float = DEFAULT_MIN_CONFIDENCE,
        min_chars: int = DEFAULT_MIN_CHARS,
        temperature: float = DEFAULT_TEMPERATURE,
    ) -> None:
        codes = frozenset(code.strip().lower() for code in supported)
        if not codes or not all(re.fullmatch(r"[a-z]{2,3}", code) for code in codes):
            raise ValueError(f"supported must be ISO 639 codes such as 'en', got {list(supported)}")
        if not 0.0 < min_confidence <= 1.0:
            raise ValueError(f"min_confidence must be in (0, 1], got {min_confidence}")
        if min_chars < 1:
            raise ValueError(f"min_chars must be at least 1, got {min_chars}")
        if temperature <= 0:
            raise ValueError(f"temperature must be positive, got {temperature}")
        self.supported = codes
        self.min_confidence = min_confidence
        self.min_chars = min_chars
        self.temperature = temperature

    def warm(self) -> None:
        """Load the model now (at start-up) rather than on the first batch, and check the supported codes."""
        self._checked_model()

    def identify(self, texts: Sequence[str]) -> list[Language]:
        """One Language per text, in order."""
        return [self.decide(score) for score in self.score(texts)]

    def score(self, texts: Sequence[str]) -> list[LanguageScore]:
        """The model's view of each text, thresholds not applied; texts under min_chars letters are not scored."""
        model = self._checked_model()
        scores = []
        for text in texts:
            cleaned = clean_text(text[:MAX_SCAN_CHARS])
            letters = letter_count(cleaned)
            if letters < self.min_chars:
                scores.append(LanguageScore(UNDETERMINED, 0.0, 0.0, letters))
                continue
            probs = model.distribution(cleaned, self.temperature)
            best = int(np.argmax(probs))
            unsupported = float(probs[model.unsupported_mask(self.supported)].sum())
            code = model.codes[best] if model.codes[best] != NO_LANGUAGE else UNDETERMINED
            scores.append(LanguageScore(code, float(probs[best]), min(unsupported, 1.0), letters))
        return scores

    def decide(self, score: LanguageScore) -> Language:
        """Thresholds applied: unsupported only when long enough and confidently in no supported language."""
        if score.code == UNDETERMINED or score.letters < self.min_chars:
            return Language(code=UNDETERMINED, confidence=0.0, supported=True, reasons=[REASON_UNDETERMINED])
        if score.code in self.supported:
            return Language(code=score.code, confidence=_shown(score.probability), supported=True)
        shown = _shown(score.unsupported)
        if _unit(score.unsupported) >= self.min_confidence:  # decided on the exact figure, shown rounded
            return Language(code=score.code, confidence=shown, supported=False, reasons=[REASON_UNSUPPORTED])
        return Language(code=score.code, confidence=shown, supported=True, reasons=[REASON_LOW_CONFIDENCE])

    def _checked_model(self) -> _Model:
        model = _model()
        unknown = self.supported - set(model.codes)
        if unknown:  # a typo here would escalate every text: refuse instead
            raise ValueError(f"the language model knows no {sorted(unknown)}; it knows {sorted(model.codes)}")
        return model


def clean_text(text: str) -> str:
    """The text the model sees: no URLs, e-mail addresses, @handles, hashtags, laughter, digits, emoji, symbols."""
    text = unicodedata.normalize("NFC", html.unescape(text))
    for pattern in (_URL, _EMAIL, _MENTION, _HASHTAG, _RETWEET, _LAUGHTER):
        text = pattern.sub(" ", text)
    text = _LATIN_WORD.sub(_drop_accented_name, text)
    return _SPACE.sub(" ", _STRETCHED.sub(r"\1\1", text.translate(_KEEP))).strip()


def _drop_accented_name(word: re.Match[str]) -> str:
    found = word.group()
    if not found[0].isupper() or found.isascii():
        return found
    before = word.string[max(0, word.start() - 8) : word.start()].rstrip()
    # A sentence's first word is capitalised by grammar, not for being a name ("Échec de ...", "Österreich ist").
    return found if not before or before[-1] in _SENTENCE_END else " "


def letter_count(text: str) -> int:
    """Letters (and combining marks) in a cleaned text, a CJK character counting CJK_LETTER_WEIGHT.

    Marks count because the vowels of Indic scripts and Thai are marks, half of what is written there.
    """
    return len(text.translate(_LETTERS)) + (CJK_LETTER_WEIGHT - 1) * len(_CJK.findall(text))


class _CharTable(dict[int, str | None]):
    """A str.translate table filled in as characters are met: a dict lookup in C per character afterwards."""

    def __init__(self, keep: Callable[[str], bool], replacement: str | None) -> None:
        super().__init__()
        self._keep = keep
        self._replacement = replacement

    def __missing__(self, point: int) -> str | None:
        ch = chr(point)
        value = ch if self._keep(ch) else self._replacement
        self[point] = value  # a race only writes the same value twice
        return value


def _is_letter(ch: str) -> bool:
    return unicodedata.category(ch)[0] in "LM"


_KEEP = _CharTable(lambda ch: ch in _KEPT_PUNCTUATION or _is_letter(ch), " ")
_LETTERS = _CharTable(_is_letter, None)
_CJK = re.compile("[\u3040-\u30ff\u3400-\u9fff\uac00-\ud7af\uf900-\ufaff\U00020000-\U0002ffff]")


def _unit(p: float) -> float:
    return min(max(p, 0.0), 1.0)  # float32 sums can stray a hair past 1


def _shown(p: float) -> float:
    return round(_unit(p), 6)  # as the other tasks report their confidences


class _Model:
    """py3langid's identifier, its labels folded onto ISO 639-1 codes where it splits a language in dialects."""

    def __init__(self) -> None:
        from py3langid.langid import MODEL_FILE
        from py3langid.langid import LanguageIdentifier as Py3LangId

        self._identifier: _Py3LangId = Py3LangId.from_model_file(MODEL_FILE, norm_probs=True)
        labels: list[str] = list(self._identifier.labels)
        self.codes: list[str] = list(dict.fromkeys(_FOLDED.get(label, label) for label in labels))
        self._column = {label: self.codes.index(_FOLDED.get(label, label)) for label in labels}
        self._masks: dict[frozenset[str], NDArray[np.bool_]] = {}

    def distribution(self, text: str, temperature: float) -> NDArray[np.float64]:
        """Probability of each of `codes` for a cleaned, non-empty text, tempered by `temperature`."""
        ranked = self._identifier.rank(text)
        probs = np.zeros(len(self.codes))
        np.add.at(probs, [self._column[label] for label, _ in ranked], [p for _, p in ranked])
        if temperature != 1.0:
            probs **= 1.0 / temperature
        total = probs.sum()
        return probs / total if total > 0 else probs

    def unsupported_mask(self, supported: frozenset[str]) -> NDArray[np.bool_]:
        """True for the languages not supported (zxx is no language); cached per set (a race computes it twice)."""
        mask = self._masks.get(supported)
        if mask is None:
            mask = np.array([code not in supported and code != NO_LANGUAGE for code in self.codes])
            self._masks[supported] = mask
        return mask


_MODEL: _Model | None = None
_MODEL_LOCK = threading.Lock()


def _model() -> _Model:
    global _MODEL  # noqa: PLW0603  # one model per process, built on first use, shared by every identifier
    if _MODEL is None:
        with _MODEL_LOCK:
            if _MODEL is None:
                _MODEL = _Model()
    return _MODEL


# ------------------------------------------------------------------------------------------------ the task
class LanguageTask(NotAskedOfLargeModel):
    """Tell which language each person-written text is in; a text confidently in no supported language escalates
    with `language.unsupported`, so the large model classifies and moderates it (ClassifyTask and ModerateTask
    settle for this reason) instead of the English-only mini model guessing with false confidence."""

    name: ClassVar[str] = "language"
    field: ClassVar[str] = "language"

    def __init__(self, settings: Settings, identifier: LanguageIdentifier | None = None) -> None:
        cfg = settings.language
        self._enabled = cfg.enabled
        self._identifier = identifier or LanguageIdentifier(
            cfg.supported, min_confidence=cfg.min_confidence, min_chars=cfg.min_chars
        )

    @classmethod
    def configure(cls, settings: Settings) -> LanguageTask:
        return cls(settings)

    @classmethod
    def load(cls, settings: Settings, encoder: Encoder) -> LanguageTask:
        task = cls(settings)
        if task._enabled:
            task._identifier.warm()  # load the n-gram model and check the supported codes at start-up
        return task

    def run(self, batch: Batch) -> list[Language | None]:
        if not self._enabled:
            return [None] * len(batch.jobs)
        idx = [i for i, job in enumerate(batch.jobs) if job.identify_language and batch.texts[i]]
        out: list[Language | None] = [None] * len(batch.jobs)
        for i, language in zip(idx, self._identifier.identify([batch.texts[i] for i in idx]), strict=True):
            out[i] = language
        return out

    def reasons(self, language: Language | None) -> list[str]:
        return [REASON_UNSUPPORTED] if language is not None and not language.supported else []
