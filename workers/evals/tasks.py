"""Multiple-choice tasks: items of (context, choices, gold index), from a JSONL file or built in.

A task is scored the way lm-evaluation-harness scores its multiple-choice tasks (Gao et al.,
``output_type: multiple_choice``): each choice is a continuation of the context, scored by its
summed log-probability (workers.evals.scoring). This module only reads and checks items.

File format, one JSON object per line, in the project's field names::

    {"context": "x = (1 + (2", "choices": ["))", ")", ")))"], "gold": 0}

or in the field names of the datasets the harness reads, so that a dump of a harness task's
documents needs no conversion: ``query`` / ``ctx`` / ``question`` / ``goal`` for the context,
``choices`` / ``endings`` / ``options`` for the choices (a list of strings, or ARC's
``{"text": [...], "label": [...]}``), ``gold`` / ``label`` / ``answer`` / ``answerKey`` for the
answer (an index, a choice label such as "B", or the text of the right choice). With the
harness's field names the choices are continued after one space, the harness's default
``target_delimiter``, unless the context already ends in whitespace; with the project's names
the strings are taken exactly as written.

Bad input is one line naming the file and line (``TaskError``), never a traceback: a line that
is not JSON, a missing field, fewer than two choices, a gold index out of range.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

__all__ = ["Item", "Task", "TaskError", "load_task_file", "HARNESS_DELIMITER"]

HARNESS_DELIMITER = " "  # lm-evaluation-harness's default target_delimiter
CONTEXT_FIELDS = ("context", "query", "ctx", "question", "goal")
CHOICE_FIELDS = ("choices", "endings", "options")
GOLD_FIELDS = ("gold", "label", "answer", "answerKey")
MAX_LINE_BYTES = 1 << 20  # one item; a longer line is not an item of a multiple-choice task


class TaskError(ValueError):
    """A task file or setting that cannot be used; the message names the file (and line)."""


@dataclass(frozen=True)
class Item:
    context: str
    choices: tuple[str, ...]
    gold: int


@dataclass(frozen=True)
class Task:
    name: str
    items: tuple[Item, ...]

    @property
    def chance(self) -> float:
        """Expected accuracy of a uniform guess: the mean over items of 1 / choices."""
        return sum(1.0 / len(it.choices) for it in self.items) / len(self.items) if self.items else 0.0


def _first(doc: dict, names: tuple[str, ...]):
    return next(((k, doc[k]) for k in names if k in doc), (None, None))


def _choices(value, where: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(texts, labels) of a choices field: a list of strings, or {"text": [...], "label": [...]}."""
    labels: tuple[str, ...] = ()
    if isinstance(value, dict):
        labels = tuple(str(x) for x in value.get("label", ()) or ())
        value = value.get("text")
    if not isinstance(value, list) or not all(isinstance(c, str) for c in value):
        raise TaskError(f"{where}: choices must be a list of strings (or {{\"text\": [...]}})")
    if len(value) < 2:
        raise TaskError(f"{where}: {len(value)} choice(s); a multiple-choice item needs at least 2")
    return tuple(value), labels


def _gold(value, texts: tuple[str, ...], labels: tuple[str, ...], where: str) -> int:
    if isinstance(value, bool) or value is None:
        raise TaskError(f"{where}: gold {value!r} is not an index, a choice label or a choice's text")
    if isinstance(value, str) and value.strip().lstrip("-").isdigit() and value not in labels:
        value = int(value)
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, int):
        if not 0 <= value < len(texts):
            raise TaskError(f"{where}: gold index {value} is out of range (expected 0-{len(texts) - 1})")
        return value
    if isinstance(value, str):
        if value in labels:
            return labels.index(value)
        letters = [chr(ord("A") + i) for i in range(len(texts))]
        if value in letters:
            return letters.index(value)
        if value in texts:
            return texts.index(value)
    raise TaskError(f"{where}: gold {value!r} is not an index, a choice label or a choice's text")


def parse_item(doc, where: str) -> Item:
    """One item from a JSON object in either field naming (module docstring)."""
    if not isinstance(doc, dict):
        raise TaskError(f"{where}: expected a JSON object with context, choices and gold")
    ck, context = _first(doc, CONTEXT_FIELDS)
    chk, choices = _first(doc, CHOICE_FIELDS)
    gk, gold = _first(doc, GOLD_FIELDS)
    missing = [n for n, k in (("context", ck), ("choices", chk), ("gold", gk)) if k is None]
    if missing:
        raise TaskError(f"{where}: no {' or '.join(missing)} field (fields: {', '.join(map(str, doc)) or 'none'})")
    if not isinstance(context, str) or not context:
        raise TaskError(f"{where}: {ck} must be a non-empty string")
    texts, labels = _choices(choices, where)
    index = _gold(gold, texts, labels, where)
    if ck != "context" and not context[-1].isspace():  # the harness's naming: its delimiter
        texts = tuple(c if c[:1].isspace() else HARNESS_DELIMITER + c for c in texts)
    if any(not c for c in texts):
        raise TaskError(f"{where}: an empty choice (a continuation needs at least one character)")
    return Item(context, texts, index)


def load_task_file(path: str, name: str | None = None, limit: int | None = None) -> Task:
    """The task in the JSONL file ``path`` (its first ``limit`` items; None: all of them)."""
    label = name or os.path.splitext(os.path.basename(path))[0]
    items: list[Item] = []
    try:
        with open(path, "rb") as fh:
            for lineno, raw in enumerate(fh, 1):
                where = f"{path}:{lineno}"
                if len(raw) > MAX_LINE_BYTES:
                    raise TaskError(f"{where}: line of {len(raw)} bytes (an item is at most {MAX_LINE_BYTES})")
                if not raw.strip():
                    continue
                try:
                    doc = json.loads(raw)
                except (ValueError, UnicodeDecodeError) as e:
                    raise TaskError(f"{where}: not a JSON object ({str(e).splitlines()[0]})") from None
                items.append(parse_item(doc, where))
                if limit is not None and len(items) >= limit:
                    break
    except OSError as e:
        raise TaskError(f"{path}: cannot read the task file ({e.strerror or e}; expected a JSONL file of items)") from None
    if not items:
        raise TaskError(f"{path}: no items (expected one JSON object per line)")
    return Task(label, tuple(items))
