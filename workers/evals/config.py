"""The spec's ``evals:`` section: which tasks every trial is evaluated on, and when.

    evals:
      tasks: [brackets, identifier, next_line, tasks/arc_easy.jsonl]
      every: eval          # at each held-out evaluation (default), or "end": the final one only
      n_items: 300         # items per built-in task (a file's task: all its items, or its own n_items)
      tokenizer: tok.json  # a token corpus: the Hugging Face tokenizer.json its ids come from

A task is a built-in name (workers.evals.builtin), a path to a JSONL file of items
(workers.evals.tasks; relative to the spec's directory), or a mapping
``{name, builtin | file, n_items}``. Evaluation never changes what a trial trains, so none of
this enters trial ids: a finished trial keeps the tasks it was evaluated on, and ``scalesweep
status`` lists the tasks each finished trial lacks.
"""

from __future__ import annotations

import os
import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = ["EvalTask", "EvalsConfig", "EVERY"]

EVERY = ("eval", "end")
TASK_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$")  # a column value and part of no path


class _Settings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class EvalTask(_Settings):
    name: str = ""  # default: the built-in's name, or the file's name without .jsonl
    builtin: str | None = None
    file: str | None = None
    n_items: int | None = Field(None, ge=1, le=100_000)

    @model_validator(mode="before")
    @classmethod
    def _word(cls, v):
        if isinstance(v, str):  # a bare word is a built-in task, anything that looks like a file a file
            return {"file": v} if v.endswith(".jsonl") or os.sep in v or "/" in v else {"builtin": v}
        return v

    @model_validator(mode="after")
    def _one_source(self):
        if (self.builtin is None) == (self.file is None):
            raise ValueError("expected exactly one of builtin (a built-in task's name) or file (a JSONL file)")
        if not self.name:
            base = self.builtin or os.path.splitext(os.path.basename(self.file))[0]
            object.__setattr__(self, "name", base)
        if not TASK_NAME.match(self.name):
            raise ValueError(f"task name {self.name!r}: expected letters, digits, '_', '-' or '.' (at most 64)")
        return self


class EvalsConfig(_Settings):
    tasks: tuple[EvalTask, ...] = Field(min_length=1)
    every: Literal["eval", "end"] = "eval"
    n_items: int = Field(300, ge=10, le=100_000)  # per built-in task
    seed: int = Field(0, ge=0)  # which items the built-in tasks draw
    tokenizer: str | None = None  # a tokenizer.json (token corpora)
    tokens_per_batch: int = Field(8192, ge=256)  # tokens per scoring batch (padded), on the trial's device

    @model_validator(mode="after")
    def _distinct(self):
        names = [t.name for t in self.tasks]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"task {dup[0]!r} named twice (give one of them another name:)")
        return self

    def items_of(self, task: EvalTask) -> int | None:
        """How many items ``task`` uses: its own n_items, else the section's for a built-in (all of a file's)."""
        return task.n_items if task.n_items is not None else (self.n_items if task.builtin else None)

    def with_paths(self, base: str) -> "EvalsConfig":
        """The section with file and tokenizer paths made absolute against ``base`` (the spec's directory)."""
        def absolute(p: str | None) -> str | None:
            return None if p is None else os.path.normpath(os.path.join(base, os.path.expanduser(p)))

        tasks = tuple(t.model_copy(update={"file": absolute(t.file)}) if t.file else t for t in self.tasks)
        return self.model_copy(update={"tasks": tasks, "tokenizer": absolute(self.tokenizer)})
