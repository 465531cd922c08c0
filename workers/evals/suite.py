"""A spec's tasks, ready to score: read or generated once per worker process, encoded per model.

``load_suite`` turns the ``evals:`` section (workers.evals.config) and the ``data:`` section into
tasks: JSONL files are read, built-in tasks generated from the corpus's held-out blocks (never
trained on; workers.gpt.data). Text becomes token ids through the corpus's tokenizer: bytes for
a text or built-in corpus, the ``evals.tokenizer`` file (Hugging Face ``tokenizers``, read from
disk, never downloaded) for a token corpus. The suite is cached per process (Ray reuses worker
processes), and so is each task's encoding per model context length.

``check_suite`` does the same at spec load, so a bad file, an unknown built-in or a token corpus
without a tokenizer is one line before anything runs, not a failed trial per point.
"""

from __future__ import annotations

import os
from functools import lru_cache
from typing import Callable

from workers.evals.config import EvalsConfig
from workers.evals.scoring import Encoded, byte_encoder, encode_task, score
from workers.evals.tasks import Task, TaskError, load_task_file

__all__ = ["Suite", "load_suite", "check_suite", "suite_for", "score_tasks", "MAX_BLOCKS"]

MAX_BLOCKS = 256  # held-out blocks read for the built-in tasks (2 MB of text at 8k-byte blocks)


def _tokenizer(path: str) -> tuple[Callable[[str], list[int]], Callable[[list[int]], str]]:
    try:
        from tokenizers import Tokenizer
    except ImportError:  # a dependency: only a broken install lacks it
        raise TaskError("evals.tokenizer: the tokenizers package is not installed (pip install tokenizers)") from None
    try:
        tok = Tokenizer.from_file(path)
    except Exception as e:  # the Rust library's errors are plain Exceptions
        raise TaskError(f"evals.tokenizer: cannot read {path} ({str(e).splitlines()[0] if str(e) else type(e).__name__}; "
                        "expected a Hugging Face tokenizer.json)") from None
    return (lambda text: tok.encode(text, add_special_tokens=False).ids), (lambda ids: tok.decode(list(ids)))


def _heldout_text(data, cache_dir: str, decode) -> list[str]:
    from workers.gpt.data import DataError, load_corpus

    try:
        corpus = load_corpus(data, cache_dir)
    except DataError as e:
        raise TaskError(str(e)) from None
    bt = corpus.block_tokens
    blocks = corpus.eval_blocks[:MAX_BLOCKS]
    if decode is None:
        return [bytes(corpus.tokens[b * bt:(b + 1) * bt]).decode("utf-8", errors="replace") for b in blocks]
    return [decode([int(t) for t in corpus.tokens[b * bt:(b + 1) * bt]]) for b in blocks]


class Suite:
    """The tasks of one ``evals:`` section over one corpus (module docstring)."""

    def __init__(self, cfg: EvalsConfig, data=None, cache_dir: str = ""):
        self.cfg = cfg
        encode, decode = _tokenizer(cfg.tokenizer) if cfg.tokenizer else (byte_encoder, None)
        tokens_corpus = data is not None and data.tokens is not None
        if tokens_corpus and not cfg.tokenizer:
            raise TaskError("evals.tokenizer: data.tokens is a token corpus; scoring text tasks needs its "
                            "tokenizer.json (expected evals.tokenizer: path/to/tokenizer.json)")
        self.encode = encode
        text: list[str] | None = None
        tasks: list[Task] = []
        for t in cfg.tasks:
            if t.file is not None:
                task = load_task_file(t.file, t.name, cfg.items_of(t))
            else:
                from workers.evals.builtin import BUILTIN_TASKS, builtin_task

                if t.builtin not in BUILTIN_TASKS:
                    raise TaskError(f"evals.tasks: unknown built-in task {t.builtin!r} (expected one of "
                                    f"{', '.join(BUILTIN_TASKS)}, or a .jsonl file)")
                if data is None:
                    raise TaskError(f"evals.tasks: built-in task {t.builtin!r} is made from the corpus's held-out "
                                    "text, and this spec has no data: section (give a JSONL file instead)")
                if text is None:
                    text = _heldout_text(data, cache_dir, decode)
                task = builtin_task(t.builtin, text, cfg.items_of(t), seed=cfg.seed)
                task = Task(t.name, task.items)
            tasks.append(task)
        self.tasks = tasks
        self._encoded: dict[int, list[Encoded]] = {}

    @property
    def names(self) -> list[str]:
        return [t.name for t in self.tasks]

    def encoded(self, max_len: int) -> list[Encoded]:
        if max_len not in self._encoded:
            self._encoded[max_len] = [encode_task(t, self.encode, max_len) for t in self.tasks]
        return self._encoded[max_len]

    def evaluate(self, logits_fn, max_len: int, device="cpu", packed_fn=None) -> list[dict]:
        """One metrics row per task ({task, task_bpb, acc, acc_norm, n_items, chance}); ``packed_fn``
        (ids, pos, mask) -> logits: one row per item (workers.evals.scoring)."""
        return [{"task": e.name} | score(e, logits_fn, device=device, batch_tokens=self.cfg.tokens_per_batch,
                                         packed_fn=packed_fn)
                for e in self.encoded(max_len)]


def _stamp(cfg: EvalsConfig) -> tuple:
    """(path, size, mtime) of the section's files: a file edited between two loads is read again."""
    out = []
    for path in [t.file for t in cfg.tasks if t.file] + ([cfg.tokenizer] if cfg.tokenizer else []):
        try:
            st = os.stat(path)
            out.append((path, st.st_size, st.st_mtime_ns))
        except OSError:
            out.append((path, -1, -1))
    return tuple(out)


@lru_cache(maxsize=4)
def _cached(cfg: EvalsConfig, data, cache_dir: str, stamp: tuple) -> Suite:
    return Suite(cfg, data, cache_dir)


def load_suite(cfg: EvalsConfig, data=None, cache_dir: str = "") -> Suite:
    return _cached(cfg, data, cache_dir, _stamp(cfg))


def check_suite(cfg: EvalsConfig, data=None, cache_dir: str = "") -> list[str]:
    """The task names of ``cfg``, or TaskError (one line) if the tasks cannot be made or read."""
    return load_suite(cfg, data, cache_dir).names


def suite_for(trial) -> Suite:
    """The suite of a trial (workers.trainers.interface.Trial: its evals settings and data section)."""
    from workers.config import DataConfig

    cfg = EvalsConfig.model_validate(trial.evals)
    data = DataConfig.model_validate(trial.data) if trial.data else None
    return load_suite(cfg, data, trial.cache_dir)


def score_tasks(trial, logits_fn, *, max_len: int, device="cpu", packed_fn=None) -> list[dict]:
    """The trial's tasks scored with the model ``logits_fn`` (token ids (batch, time) -> logits),
    one row per task: what ``Context.evaluate_tasks`` records, for a command's script that writes
    ``evals.jsonl`` itself (``trial`` may be the parsed ``$SCALESWEEP_TRIAL``: a Trial or its dict)."""
    if isinstance(trial, dict):
        from types import SimpleNamespace

        trial = SimpleNamespace(**trial)
    if not trial.eval_tasks:
        return []
    return suite_for(trial).evaluate(logits_fn, max_len, device, packed_fn)
