"""Language identification: other languages are unsupported, English of every register is not, short text is und."""

from __future__ import annotations

import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import pytest
from pydantic import ValidationError

from pipeline.models import Language
from pipeline.tasks.language import (
    REASON_LOW_CONFIDENCE,
    REASON_UNDETERMINED,
    REASON_UNSUPPORTED,
    LanguageIdentifier,
    LanguageScore,
    clean_text,
    letter_count,
)
from pipeline.tasks.language_corpora import Corpus
from pipeline.tasks.language_eval import evaluate

# Composed for these tests: everyday sentences a feed or a support queue could carry.
OTHER_LANGUAGES = {
    "fr": "Je voudrais réserver une table pour deux personnes ce soir, s'il vous plaît.",
    "de": "Der Zug nach Berlin hat heute schon wieder eine Stunde Verspätung.",
    "es": "Mañana vamos a la playa con mis amigos si no llueve.",
    "it": "Il treno per Milano è in ritardo di venti minuti.",
    "nl": "Ik heb vandaag geen tijd om naar de winkel te gaan.",
    "ru": "Сегодня вечером мы пойдём в кино с друзьями.",  # noqa: RUF001  # Cyrillic on purpose
    "zh": "我们明天早上九点在公司门口见面吧。",
    "ja": "明日の会議は午後三時からに変更になりました。",
}
ENGLISH = [
    "@user lol ngl this new update is lowkey fire 🔥🔥 #gaming #blessed",
    "@user @user you really think that's gonna work?? smh 🙄",
    "RT @newsdesk: Storm warning for the east coast tonight, stay safe everyone https://t.co/abc123",
    "My card payment was declined twice at the shop, can you check what is wrong?",
    "The sensor on pump 4 reports pressure above the limit since 03:12.",
    "hahaha yesss that was sooooo good, see u tmrw",
]
# English carrying foreign names or a few foreign words: the model's byte n-grams alone would call some of these
# German or Spanish; they must stay supported.
ENGLISH_WITH_FOREIGN_WORDS = [
    "Had dinner with François and Jürgen at Café Müller in München last night, great schnitzel!",
    "José García and Begoña Núñez won the award in Córdoba",
    "Jürgen says the delivery to Málaga is late again",
    "ok so yesterday mi abuela made tamales and honestly they were the best thing I ate all week",
    "Yaar this movie was too good, ekdum mast, you should watch it",
    "Hasta la vista baby, see you next week at the gym",
]
# Too little to tell: must be und and supported, never escalated for their language.
UNDETERMINED_TEXTS = [
    "",
    "   ",
    "😂😂🔥🔥",
    "https://example.com/some/path?x=1 #MAGA #Qanon",
    "@user @user @user",
    "12345 678.90 +44 20 7946 0958",
    "ok",
    "lol",
    "Danke schön",
    "merci beaucoup",
    "gracias amigo",
    "Привет",
    "你好吗",
    "HAHAHAHAHA",
]


@pytest.fixture(scope="module")
def identifier() -> LanguageIdentifier:
    return LanguageIdentifier()


@pytest.mark.parametrize(("code", "text"), sorted(OTHER_LANGUAGES.items()))
def test_a_sentence_in_another_language_is_unsupported(identifier: LanguageIdentifier, code: str, text: str) -> None:
    """A plain sentence in French, German, Spanish, ... gets its code, supported=False and the escalation reason."""
    [result] = identifier.identify([text])
    assert result.code == code
    assert result.supported is False
    assert result.reasons == [REASON_UNSUPPORTED]
    assert result.confidence >= identifier.min_confidence


@pytest.mark.parametrize("text", ENGLISH)
def test_english_tweets_and_tickets_are_supported(identifier: LanguageIdentifier, text: str) -> None:
    """Slang, @handles, hashtags, links, emoji and numbers do not make English look foreign."""
    [result] = identifier.identify([text])
    assert (result.code, result.supported, result.reasons) == ("en", True, [])
    assert 0.8 <= result.confidence <= 1.0


@pytest.mark.parametrize("text", ENGLISH_WITH_FOREIGN_WORDS)
def test_english_with_foreign_names_or_words_is_supported(identifier: LanguageIdentifier, text: str) -> None:
    """Accented names and a few code-mixed words leave an English text English, and never unsupported."""
    [result] = identifier.identify([text])
    assert result.supported is True
    assert result.code == "en"


@pytest.mark.parametrize("text", UNDETERMINED_TEXTS)
def test_short_or_uninformative_text_is_und_and_supported(identifier: LanguageIdentifier, text: str) -> None:
    """Empty, emoji-only, link/hashtag-only, numbers-only and one-to-three-word texts are und, confidence 0."""
    [result] = identifier.identify([text])
    assert result == Language(code="und", confidence=0.0, supported=True, reasons=[REASON_UNDETERMINED])


def test_a_batch_keeps_its_order_and_length(identifier: LanguageIdentifier) -> None:
    texts = [OTHER_LANGUAGES["de"], ENGLISH[0], "", OTHER_LANGUAGES["ru"], ENGLISH[3]]
    results = identifier.identify(texts)
    assert [r.code for r in results] == ["de", "en", "und", "ru", "en"]
    assert [r.supported for r in results] == [False, True, True, False, True]
    assert identifier.identify([]) == []


def test_supported_languages_are_configurable() -> None:
    """With German supported, a German sentence passes; a French one is still unsupported."""
    bilingual = LanguageIdentifier(["en", "de"])
    german, french = bilingual.identify([OTHER_LANGUAGES["de"], OTHER_LANGUAGES["fr"]])
    assert (german.code, german.supported, german.reasons) == ("de", True, [])
    assert german.confidence > 0.9
    assert (french.code, french.supported) == ("fr", False)


def test_min_chars_decides_what_is_too_short() -> None:
    """A 30-letter German sentence is und under min_chars 40 and unsupported under min_chars 10."""
    text = "Guten Morgen zusammen, wie geht es euch"
    assert LanguageIdentifier(min_chars=40).identify([text])[0].code == "und"
    strict = LanguageIdentifier(min_chars=10).identify([text])[0]
    assert (strict.code, strict.supported) == ("de", False)


def test_a_foreign_guess_below_min_confidence_stays_supported(identifier: LanguageIdentifier) -> None:
    """Not sure enough: the code is kept for the record, but the text is not called unsupported."""
    unsure = identifier.decide(LanguageScore(code="de", probability=0.6, unsupported=0.97, letters=40))
    assert unsure == Language(code="de", confidence=0.97, supported=True, reasons=[REASON_LOW_CONFIDENCE])
    sure = identifier.decide(LanguageScore(code="de", probability=0.99, unsupported=0.9995, letters=40))
    assert (sure.supported, sure.reasons) == (False, [REASON_UNSUPPORTED])


def test_identification_is_the_same_from_a_thread_pool(identifier: LanguageIdentifier) -> None:
    """One identifier and one shared model serve concurrent batches with the same answers as serial calls."""
    texts = [*OTHER_LANGUAGES.values(), *ENGLISH, *UNDETERMINED_TEXTS]
    serial = identifier.identify(texts)
    with ThreadPoolExecutor(max_workers=4) as pool:
        parallel = list(pool.map(identifier.identify, [texts] * 8))
    assert all(batch == serial for batch in parallel)


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="ISO 639"):
        LanguageIdentifier([])
    with pytest.raises(ValueError, match="ISO 639"):
        LanguageIdentifier(["english"])
    with pytest.raises(ValueError, match="min_confidence"):
        LanguageIdentifier(min_confidence=0.0)
    with pytest.raises(ValueError, match="min_chars"):
        LanguageIdentifier(min_chars=0)
    with pytest.raises(ValueError, match="knows no"):  # a well-formed code the model lacks would escalate everything
        LanguageIdentifier(["xx"]).warm()


def test_the_result_model_is_frozen_and_ignores_unknown_fields() -> None:
    result = Language.model_validate({"code": "en", "confidence": 0.9, "supported": True, "added_later": 1})
    assert result.reasons == []
    with pytest.raises(ValidationError):
        result.code = "fr"
    with pytest.raises(ValidationError):
        Language(code="en", confidence=1.5, supported=True)


def test_clean_text_drops_what_says_nothing_about_the_language() -> None:
    cleaned = clean_text("RT @bob: sooooo good &amp; free!! 😂 https://x.co/1 #win 2024 lol, Jürgen agrees. Élan vital")
    assert cleaned == ": soo good free!! , agrees. Élan vital"
    assert letter_count("abc dé") == 5
    assert letter_count("你好") == 6  # a CJK character counts as three letters
    assert letter_count("ਚਾਈਲਡ") == 5  # Gurmukhi vowel signs are marks, and count


def test_importing_the_module_does_not_load_the_model() -> None:
    """The package is imported on first use, so `import pipeline.tasks.language` stays fast."""
    code = "import sys, pipeline.tasks.language; print('py3langid' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_evaluate_reports_false_unsupported_and_recall(identifier: LanguageIdentifier) -> None:
    """The evaluation's per-set figures on tiny composed sets: English never unsupported, the others caught."""
    english = Corpus("english", "composed", ENGLISH + ENGLISH_WITH_FOREIGN_WORDS, "en")
    german = Corpus("german", "composed", [OTHER_LANGUAGES["de"], "Das Wetter ist heute wirklich schön.", "ja"], "de")
    report = evaluate(identifier, [english, german])
    rows = {row["dataset"]: row for row in report["datasets"]}
    assert rows["english"]["unsupported_share"] == 0.0
    assert rows["german"]["recall_unsupported"] == pytest.approx(2 / 3)
    assert rows["german"]["und_share"] == pytest.approx(1 / 3)
    assert rows["german"]["code_accuracy_identified"] == 1.0
