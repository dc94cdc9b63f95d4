"""Real texts for measuring language identification: English from ../shared/data, other languages from Debian.

Nothing here is copied into the project: every reader takes a path and reads the files where they lie.

English comes from the public train/validation splits in `../shared/data` (tweets, banking and assistant
requests, chat and spoken dialogue turns, BBC news). Other languages come from two sources a Debian machine
can have without a model hub:

- gettext message catalogs (`/usr/share/locale/<lang>/LC_MESSAGES/*.mo`): real human translations of
  program messages (coreutils, apt, git, systemd, PostgreSQL, ...) in some 40 languages; short, technical,
  often holding English command names, the way support tickets and device messages do. The untranslated
  English `msgid`s of the same catalogs are an English set too.
- fortune cookies (`apt-get install fortunes-de fortunes-es ...`, under `/usr/share/games/fortunes`):
  jokes, proverbs and quotes people wrote in German, Spanish, Italian, Russian, Polish, Czech, Bulgarian,
  Esperanto, Irish, Portuguese and Chinese; longer and closer to what people post.

Every reader is deterministic (sorted files, a fixed-seed sample), so figures can be reproduced.
"""

from __future__ import annotations

import csv
import gettext
import json
import random
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

LOCALE_DIR = Path("/usr/share/locale")
FORTUNES_DIR = Path("/usr/share/games/fortunes")
SAMPLE_SEED = 13
CATALOG_SAMPLE = 600  # texts per language from the message catalogs
FORTUNE_SAMPLE = 600  # texts per language from the fortunes

# Catalogs of sentences and messages; left out are ISO code tables, keyboard layouts, MIME type names and GTK
# widget properties, which are lists of names rather than language.
CATALOG_DOMAINS = (
    "Linux-PAM", "PackageKit", "adduser", "apt", "bash", "binutils", "coreutils", "diffutils", "dpkg",
    "findutils", "gettext-runtime", "gettext-tools", "git", "glib20", "gnupg2", "grep", "gtk20", "libapt-pkg6.0",
    "libc", "make", "man-db", "postgres-15", "procps-ng", "psql-15", "sed", "shadow", "systemd", "tar", "wget",
    "xz",
)  # fmt: skip
# A language is measured when at least this many of the domains above are translated into it.
MIN_CATALOGS = 8

# fortunes directory (or file) -> ISO 639-1 code. English: fortunes-min's three files.
FORTUNE_SOURCES: dict[str, str] = {
    "de": "de", "es": "es", "it": "it", "ru": "ru", "pl": "pl", "cs": "cs", "bg": "bg", "eo": "eo",
    "ga": "ga", "brasil": "pt", "chinese": "zh",
}  # fmt: skip
ENGLISH_FORTUNES = ("fortunes", "literature", "riddles")

_PLACEHOLDER = re.compile(r"%(?:\([^)]*\))?[-+ #0-9.*lhLqjzt]*[a-zA-Z%]|\{[^{}]*\}|\$\{?\w+\}?")
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
_ATTRIBUTION = re.compile(r"^\s*(?:--|—|―)\s")
_SPACE = re.compile(r"\s+")
_TURN = re.compile(r"^\s*(?:#Person\d+#|[^:\n]{1,40}):\s*(.*)$")


@dataclass(frozen=True)
class Corpus:
    """One evaluation set: its texts and the language they are all in."""

    name: str
    source: str  # the file(s) and split, as written in docs/language.md
    texts: list[str]
    code: str  # ISO 639-1 of every text


def _squash(text: str) -> str:
    return _SPACE.sub(" ", text).strip()


def _sample(texts: list[str], k: int) -> list[str]:
    unique = sorted(set(texts))
    return unique if len(unique) <= k else random.Random(SAMPLE_SEED).sample(unique, k)


# ------------------------------------------------------------------------------------------- English sets
def english_corpora(data_dir: Path) -> list[Corpus]:
    """Every English set of ../shared/data this machine has; a missing file is skipped with a note."""
    readers = (
        ("tweets_hate_val", "moderation/tweeteval_hate_val_text.txt", _lines),
        ("tweets_offensive_val", "moderation/tweeteval_offensive_val_text.txt", _lines),
        ("tweets_hate_train", "moderation/tweeteval_hate_train_text.txt", _lines),
        ("tweets_offensive_train", "moderation/tweeteval_offensive_train_text.txt", _lines),
        ("davidson_tweets", "moderation/davidson_labeled_data.csv", lambda p: _csv_column(p, "tweet")),
        ("banking77_train", "intents/banking77_train.csv", lambda p: _csv_column(p, "text")),
        ("clinc150_val", "intents/clinc150_train_val.json", _clinc_val),
        ("samsum_val_turns", "dialogue/samsum_validation.jsonl", lambda p: _turns(p, "context")),
        ("dialogsum_dev_turns", "dialogue/dialogsum_dev.jsonl", lambda p: _turns(p, "dialogue")),
        ("bbc_news_train", "news/bbc_news_train.csv", lambda p: _csv_column(p, "Text")),
    )
    found = []
    for name, relative, read in readers:
        path = data_dir / relative
        if not path.is_file():
            print(f"note: {path} not found, {name} skipped", file=sys.stderr)
            continue
        texts = [t for t in read(path) if t]
        found.append(Corpus(name, relative, texts, "en"))
    return found


def _lines(path: Path) -> list[str]:
    return [_squash(line) for line in path.read_text(encoding="utf-8").splitlines()]


def _csv_column(path: Path, column: str) -> list[str]:
    with path.open(encoding="utf-8", newline="") as f:
        return [_squash(row[column]) for row in csv.DictReader(f)]


def _clinc_val(path: Path) -> list[str]:
    data = json.loads(path.read_text(encoding="utf-8"))
    return [_squash(text) for text, _ in data["val"] + data["oos_val"]]


def _turns(path: Path, field: str) -> list[str]:
    """One text per dialogue turn, the speaker's name cut off: the short messages of a chat."""
    texts = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        for turn in json.loads(line)[field].splitlines():
            match = _TURN.match(turn)
            texts.append(_squash(match.group(1) if match else turn))
    return texts


# ------------------------------------------------------------------------------------ message catalogs
def catalog_corpora(locale_dir: Path = LOCALE_DIR, sample: int = CATALOG_SAMPLE) -> list[Corpus]:
    """Translated messages per language, and the English originals, from the gettext catalogs installed."""
    if not locale_dir.is_dir():
        print(f"note: {locale_dir} not found, message catalogs skipped", file=sys.stderr)
        return []
    by_code: dict[str, list[str]] = {}
    catalogs: dict[str, int] = {}
    english: list[str] = []
    for lang_dir in sorted(p for p in locale_dir.iterdir() if p.is_dir()):
        code = re.split(r"[_@.]", lang_dir.name)[0]
        if code == "en" or len(code) != 2:  # en_GB etc. are English; 3-letter codes have no ISO 639-1 name
            continue
        for domain in CATALOG_DOMAINS:
            mo = lang_dir / "LC_MESSAGES" / f"{domain}.mo"
            if mo.is_file():
                pairs = list(_catalog_pairs(mo))
                by_code.setdefault(code, []).extend(text for _, text in pairs)
                catalogs[code] = catalogs.get(code, 0) + 1
                english.extend(original for original, _ in pairs)
    corpora = [
        Corpus(f"catalog_{code}", f"{locale_dir}/{code}*/LC_MESSAGES/*.mo", _sample(texts, sample), code)
        for code, texts in sorted(by_code.items())
        if catalogs[code] >= MIN_CATALOGS
    ]
    originals = Corpus("catalog_en_msgid", f"{locale_dir}/*/LC_MESSAGES/*.mo msgids", _sample(english, sample), "en")
    return [originals, *corpora]


def _catalog_pairs(path: Path) -> Iterator[tuple[str, str]]:
    """(English original, translation) of each translated message, placeholders and markup taken out."""
    try:
        with path.open("rb") as f:
            catalog: dict[object, str] = gettext.GNUTranslations(f)._catalog  # type: ignore[attr-defined]
    except (OSError, UnicodeDecodeError, LookupError, IndexError, ValueError):  # a legacy charset or a broken header
        return
    for key, translation in catalog.items():
        original = key[0] if isinstance(key, tuple) else key  # plural forms: (msgid, index)
        if not isinstance(original, str) or not original or (isinstance(key, tuple) and key[1] != 0):
            continue
        original = original.rpartition("\x04")[2]  # drop a msgctxt
        source, target = _clean_message(original), _clean_message(translation)
        if target and target != source:  # an untranslated message repeats the English
            yield source, target


def _clean_message(text: str) -> str:
    text = _PLACEHOLDER.sub(" ", text).replace("_", "").replace("&", "")  # mnemonics: "_File", "&Open"
    return _squash(re.sub(r"<[^>]+>", " ", text))


# ---------------------------------------------------------------------------------------------- fortunes
def fortune_corpora(fortunes_dir: Path = FORTUNES_DIR, sample: int = FORTUNE_SAMPLE) -> list[Corpus]:
    """One set per fortunes language installed (`apt-get install fortunes-de ...`), and fortunes-min's English."""
    if not fortunes_dir.is_dir():
        print(
            f"note: {fortunes_dir} not found (apt-get install fortunes-min fortunes-de ...), skipped", file=sys.stderr
        )
        return []
    corpora = []
    for source, code in [*((e, "en") for e in ENGLISH_FORTUNES), *FORTUNE_SOURCES.items()]:
        path = fortunes_dir / source
        if not path.exists():
            print(f"note: {path} not found, fortunes {source} skipped", file=sys.stderr)
            continue
        files = sorted(_fortune_files(path))
        texts = [text for f in files for text in _fortunes(f)]
        name = f"fortunes_{source}" if code == "en" else f"fortunes_{code}"
        corpora.append(Corpus(name, f"{path}", _sample(texts, sample), code))
    return corpora


def _fortune_files(path: Path) -> Iterator[Path]:
    if path.is_file():
        yield path
        return
    for f in path.iterdir():  # skip the index (.dat) and the UTF-8 twin links (.u8) of the same text
        if f.is_file() and not f.is_symlink() and f.suffix not in {".dat", ".u8"} and "asciiart" not in f.name:
            yield f


def _fortunes(path: Path) -> Iterator[str]:
    """The cookies of one file, '%'-separated, with ANSI colours and '-- Author' lines taken out."""
    raw = _ANSI.sub("", path.read_bytes().decode("utf-8", errors="replace"))
    for cookie in re.split(r"^%\s*$", raw, flags=re.MULTILINE):
        text = _squash(" ".join(line for line in cookie.splitlines() if not _ATTRIBUTION.match(line)))
        if text:
            yield text
