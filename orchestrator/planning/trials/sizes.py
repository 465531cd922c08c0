"""Sizes: from a target parameter count to a model a trainer can build, with its exact N.

The planners need N before a trial runs (D = C / 6N), so every trainer's models are sized here,
one mapping per spec (:func:`size_mapping`):

- the built-in GPT's width/depth rule (workers.gpt.arch.shape_for_params): the shape nearest
  the target under the spec's head size and aspect ratio;
- a simulated world's: the target itself, rounded (a world has a parameter count only);
- a lab's **ladder** (``model.ladder``): a fixed list of named settings, each with its exact N;
  a target snaps to the nearest rung in log N, as labs scale a fixed ladder of configs
  (Pythia's, OLMo's);
- a lab's **hook** (``model.size: module:function``): ``size(target_n) -> (settings, exact_n)``,
  called in the driver before anything runs; what it returns is checked, once per target.

A :class:`Size`'s settings are what the trainer gets as ``trial.model``; they enter the trial id.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from typing import Callable

from orchestrator.errors import UserError
from workers.gpt.arch import GPTShape, ShapeRule, shape_for_params

__all__ = ["Hook", "Ladder", "Size", "size_mapping"]


@dataclass(frozen=True)
class Size:
    """One model size: its exact N, the settings its trainer builds it from, and (where known)
    its rung's name, its non-embedding N and the built-in GPT's shape."""

    n_params: int
    settings: dict = field(default_factory=dict, hash=False)
    name: str = ""
    n_params_nonembed: int | None = None
    shape: GPTShape | None = None


class Ladder:
    """Targets snap to the nearest rung in log N (``model.ladder``)."""

    def __init__(self, rungs):
        self.rungs = sorted(rungs, key=lambda r: r.n_params)

    def __call__(self, target: float) -> Size:
        r = min(self.rungs, key=lambda r: abs(math.log(r.n_params / target)))
        return Size(r.n_params, dict(r.settings), r.name, r.n_params_nonembed)


class Hook:
    """A lab's ``size(target_n) -> (settings, exact_n)``, checked and remembered per target."""

    def __init__(self, fn: Callable, where: str = "model.size"):
        self.fn, self.where = fn, where
        self._seen: dict[float, Size] = {}

    def __call__(self, target: float) -> Size:
        if target in self._seen:
            return self._seen[target]
        try:
            out = self.fn(target)
        except Exception as e:  # the user's code: one line naming it, before anything runs
            raise UserError(f"{self.where}: raised {type(e).__name__}: {e} for target N={target:.4g}") from None
        if not (isinstance(out, (tuple, list)) and len(out) == 2 and isinstance(out[0], dict)):
            raise UserError(f"{self.where}: returned {_short(out)} for target N={target:.4g} (expected a pair "
                            "(settings: dict, exact_n: int))")
        settings, n = out
        if isinstance(n, bool) or not isinstance(n, (int, float)) or not math.isfinite(n) or n != int(n) or n <= 0:
            raise UserError(f"{self.where}: returned N={n!r} for target N={target:.4g} (expected a positive whole "
                            "number, the model's exact parameter count)")
        try:
            json.dumps(settings)
        except (TypeError, ValueError) as e:
            raise UserError(f"{self.where}: settings for target N={target:.4g} are not JSON ({e}; expected "
                            "numbers, strings, lists and mappings)") from None
        size = self._seen[target] = Size(int(n), dict(settings))
        return size


def _short(v) -> str:
    text = repr(v)
    return text if len(text) <= 80 else text[:77] + "..."


def gpt_sizes(vocab_size: int, seq_len: int, rule: ShapeRule) -> Callable[[float], Size]:
    """The built-in GPT's width/depth rule as a size mapping."""
    def size(target: float) -> Size:
        shape = shape_for_params(target, vocab_size, seq_len, rule)
        return Size(shape.n_params, asdict(shape), "", shape.n_params_nonembed, shape)

    return size


def simulated_size(target: float) -> Size:
    """A simulated world's model is its parameter count."""
    return Size(int(round(target)))


def size_mapping(spec, vocab_size: int = 0, rule: ShapeRule | None = None) -> Callable[[float], Size]:
    """The size mapping of ``spec`` (a SweepSpec): the GPT rule, the simulator's, a ladder or a hook.
    Raises UserError when a hook cannot be imported or called as size(target_n)."""
    if spec.trainer == "simulated":
        return simulated_size
    if spec.trainer == "gpt":
        return gpt_sizes(vocab_size, spec.model.seq_len, rule)
    if spec.model.ladder is not None:
        return Ladder(spec.model.ladder)
    from workers.trainers.interface import TrainerLoadError
    from workers.trainers.loading import import_function

    try:
        fn = import_function(spec.model.size, spec.trainer.workdir, params=("target_n",))
    except TrainerLoadError as e:
        raise UserError(f"model.size: {e}") from None
    return Hook(fn)
