"""The reviewer's terminal: show one review record, read one-letter commands, return a decision (no Kafka here)."""

from __future__ import annotations

import shutil
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Literal

import orjson
from pydantic import BaseModel, ConfigDict, ValidationError, model_validator

from pipeline.errors import ConfigError
from pipeline.models import ReviewRecord
from pipeline.review.verdicts import (
    Decision,
    Quit,
    Skip,
    Verdict,
    flag_choices,
    label_choices,
    large_verdict,
    mini_verdict,
)

# Like input(): shows the prompt and returns one line without its newline; raises EOFError when input ends.
ReadLine = Callable[[str], str]
Write = Callable[[str], None]
Accept = Literal["mini", "large"]

PROMPT = "> "
FLAGS_PROMPT = "flags (numbers or names, comma-separated; empty = none flagged): "
HELP = """\
  m        accept the mini model's answer (its label, and its flags when moderation was in question)
  l        accept the large model's answer
  1..N     relabel: the label with that number (or type its name)
  f        mark moderation flags first, then choose m, l or a label; d sends the flags alone
  s        skip: back to the end of the review queue, for later or for someone else
  q        quit: this item and the ones after it stay on the review topic
  r        show the item again
  ?        this help"""


# ---------------------------------------------------------------------------------------------- render
def render(record: ReviewRecord, *, where: str = "", width: int | None = None) -> str:
    """Everything a person needs to settle the item, as plain text (works over ssh, in a log, in a pager)."""
    width = width or min(shutil.get_terminal_size((100, 24)).columns, 120)
    sent = record.sent_at.strftime("%Y-%m-%d %H:%M UTC")
    lines = [" ".join(part for part in ("──", record.kind, record.id, where, "sent", sent) if part)]
    lines.append(f"why a person:   {', '.join(record.review_reasons) or '-'}")
    lines.append(f"why escalated:  {', '.join(record.reasons) or '-'}")
    lines.append("")
    lines += [textwrap.fill(part, width, initial_indent="  ", subsequent_indent="  ") for part in _event_lines(record)]
    lines.append("")
    lines += _mini_lines(record)
    lines += _large_lines(record)
    lines.append(_menu(record))
    return "\n".join(lines)


def _event_lines(record: ReviewRecord) -> list[str]:
    event = record.event
    segments = event.get("segments")
    if isinstance(segments, list):
        turns = sorted((s for s in segments if isinstance(s, dict)), key=lambda s: int(s.get("seq", 0)))
        return [f"{s.get('speaker', '?')}: {s.get('text', '')}" for s in turns] or ["(no turns)"]
    out = []
    if record.kind == "transcript":
        out.append(f"{event.get('speaker', '?')} (conversation {event.get('conversation_id', '?')}):")
    readings = event.get("readings")
    if isinstance(readings, dict) and readings:
        out.append(f"device {event.get('device_id', '?')}: " + ", ".join(f"{k}={v}" for k, v in readings.items()))
    text = event.get("text")
    out.append(text if isinstance(text, str) and text.strip() else "(no text)")
    return out


def _mini_lines(record: ReviewRecord) -> list[str]:
    result, lines = record.result, []
    c = result.classification
    if c is not None:
        lines.append(f"mini model:     {c.label} {c.confidence:.2f} ({c.method}, label set {c.label_set})")
        numbered = [f"{i} {name} {score:.2f}" for i, (name, score) in enumerate(c.scores.items(), start=1)]
        lines.append("  labels:       " + " · ".join(numbered))
        lines += [f"  reason:       {reason}" for reason in c.reasons]
    m = result.moderation
    if m is not None:
        flagged = ", ".join(f"{name} {m.categories.get(name, 0):.2f}" for name in m.flagged_categories)
        state = f"flagged: {flagged}" if m.flagged else "not flagged"
        lines.append(f"moderation:     {state} (confidence {m.confidence:.2f})")
        if m.uncertain_categories:
            unsure = ", ".join(f"{name} {m.categories.get(name, 0):.2f}" for name in m.uncertain_categories)
            lines.append(f"  uncertain:    {unsure}")
        lines += [f"  reason:       {reason}" for reason in m.reasons]
    if not lines:
        lines.append("mini model:     no classification or moderation for this item")
    return lines


def _large_lines(record: ReviewRecord) -> list[str]:
    verdict = large_verdict(record)
    if verdict is not None:
        parts = [f"label {verdict.label}"] if verdict.label is not None else []
        if verdict.flagged_categories is not None:
            parts.append("flags " + (", ".join(verdict.flagged_categories) or "none"))
        lines = [f"large model:    {'; '.join(parts)}"]
    elif record.large_model_answer:
        raw = orjson.dumps(record.large_model_answer).decode()
        lines = [f"large model:    (no usable label or flags) {raw[:300]}"]
    else:
        lines = ["large model:    no answer"]
    if record.large_model_error:
        lines.append(f"  error:        {record.large_model_error}")
    return lines


def _menu(record: ReviewRecord) -> str:
    parts = []
    mini, large, labels = mini_verdict(record), large_verdict(record), label_choices(record)
    if mini is not None:
        parts.append(f"[m] mini{f': {mini.label}' if mini.label else ''}")
    if large is not None:
        parts.append(f"[l] large{f': {large.label}' if large.label else ''}")
    if labels:
        parts.append(f"[1-{len(labels)}] relabel")
    parts += ["[f] flags", "[s] skip", "[q] quit", "[?] help"]
    return "   ".join(parts)


# ------------------------------------------------------------------------------------------------ ask
def ask(record: ReviewRecord, read_line: ReadLine, write: Write, *, where: str = "") -> Decision:
    """Show the item and read commands until the person settles it, skips it or quits (EOF quits too)."""
    write("\n" + render(record, where=where))
    flags: tuple[str, ...] | None = None
    while True:
        try:
            line = read_line(PROMPT).strip()
        except EOFError:
            return Quit()
        command = line.lower()
        if command in {"q", "quit"}:
            return Quit()
        if command in {"s", "skip"}:
            return Skip()
        if command in {"?", "h", "help"}:
            write(HELP)
            continue
        if command == "r":
            write(render(record, where=where))
            continue
        if command == "f":
            flags = _ask_flags(record, read_line, write)
            if flags is None:
                return Quit()
            write(f"flags set: {', '.join(flags) or 'none'}; now m, l, a label, or d to send the flags alone")
            continue
        decision = _settle(record, command, line, flags)
        if isinstance(decision, str):
            write(decision)
            continue
        return decision


def _settle(record: ReviewRecord, command: str, line: str, flags: tuple[str, ...] | None) -> Verdict | str:
    """The verdict a command gives, or what to tell the person when it gives none."""
    if command in {"m", "l"}:
        accepted = mini_verdict(record) if command == "m" else large_verdict(record)
        if accepted is None:
            return "no mini-model answer to accept" if command == "m" else "no usable large-model answer to accept"
        if flags is not None:  # flags marked by the person replace the model's
            return Verdict(label=accepted.label, flagged_categories=flags, basis=accepted.basis)
        return accepted
    if command == "d":
        return Verdict(flagged_categories=flags) if flags is not None else "no flags marked yet: f first"
    label = _pick(line, label_choices(record))
    if label is not None:
        return Verdict(label=label, flagged_categories=flags)
    return f"not a command or a label: {line!r} (? for help)" if line else "? for help"


def _ask_flags(record: ReviewRecord, read_line: ReadLine, write: Write) -> tuple[str, ...] | None:
    choices = flag_choices(record)
    write("  " + " · ".join(f"{i} {name}" for i, name in enumerate(choices, start=1)))
    while True:
        try:
            line = read_line(FLAGS_PROMPT).strip()
        except EOFError:
            return None
        picked = [_pick(part.strip(), choices) for part in line.split(",") if part.strip()]
        if all(p is not None for p in picked):
            chosen = {p for p in picked if p is not None}
            return tuple(c for c in choices if c in chosen)
        write(f"not all of {line!r} are categories; choose from the numbers or names above")


def _pick(text: str, choices: list[str]) -> str | None:
    """A 1-based number or a name (case-insensitive) from `choices`."""
    if text.isdigit():
        number = int(text)
        return choices[number - 1] if 1 <= number <= len(choices) else None
    by_name = {c.lower(): c for c in choices}
    return by_name.get(text.lower())


# ------------------------------------------------------------------------------------- non-interactive
class ScriptedAnswer(BaseModel):
    """One line of an answers file: what to decide for the review record with this id."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str
    accept: Accept | None = None
    label: str | None = None
    flags: list[str] | None = None
    skip: bool = False

    @model_validator(mode="after")
    def _one_decision(self) -> ScriptedAnswer:
        if self.skip and (self.accept or self.label or self.flags is not None):
            raise ValueError("skip cannot be combined with accept, label or flags")
        if self.accept and self.label:
            raise ValueError("give accept or label, not both")
        if not (self.skip or self.accept or self.label or self.flags is not None):
            raise ValueError("say what to do: accept, label, flags or skip")
        return self


def read_answers(path: Path) -> dict[str, ScriptedAnswer]:
    """Answers by review-record id; a later line for the same id replaces an earlier one."""
    answers: dict[str, ScriptedAnswer] = {}
    try:
        lines = path.read_bytes().splitlines()
    except OSError as exc:
        raise ConfigError(f"cannot read answers file {path}: {exc}") from exc
    for number, raw in enumerate(lines, start=1):
        if not raw.strip() or raw.lstrip().startswith(b"#"):
            continue
        try:
            answer = ScriptedAnswer.model_validate(orjson.loads(raw))
        except (orjson.JSONDecodeError, ValidationError) as exc:
            raise ConfigError(
                f'{path}:{number}: not an answer ({{"id", "accept"|"label"|"flags"|"skip"}}): {exc}'
            ) from exc
        answers[answer.id] = answer
    return answers


def decide(record: ReviewRecord, answer: ScriptedAnswer | None, accept: Accept | None) -> Decision:
    """The decision without a person: the item's answer, else the `accept` policy; else skip (left for a person).

    An answer naming a label outside the label set is not skipped quietly: label_records() refuses it.
    """
    if answer is not None:
        if answer.skip:
            return Skip()
        flags = tuple(answer.flags) if answer.flags is not None else None
        if answer.accept:
            accepted = _accepted(record, answer.accept)
            if accepted is None:
                return Skip()
            return accepted if flags is None else Verdict(accepted.label, flags, accepted.basis)
        return Verdict(label=answer.label, flagged_categories=flags)
    if accept is not None:
        return _accepted(record, accept) or Skip()
    return Skip()


def _accepted(record: ReviewRecord, accept: Accept) -> Verdict | None:
    return mini_verdict(record) if accept == "mini" else large_verdict(record)
