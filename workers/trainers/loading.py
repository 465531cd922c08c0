"""From a planned trial to the trainer that runs it and the :class:`Trial` it is given.

Every trainer is ``fn(trial, ctx)``: the built-in GPT and simulator are function trainers at
fixed import paths (:data:`BUILTIN`), a lab's function is imported from the path its spec names,
and a lab's command is wrapped by :class:`workers.trainers.command.CommandTrainer`. Modules are
imported on first use, so a simulated trial never imports torch.
"""

from __future__ import annotations

import importlib
import inspect
import sys
from typing import Any, Callable

from workers.config import TrialConfig
from workers.trainers.interface import Trial, TrainerLoadError, resolve_workdir

__all__ = ["BUILTIN", "check_function", "import_function", "trainer_for", "trial_for"]

# The built-in trainers, by the word a spec names them with.
BUILTIN = {"gpt": "workers.gpt.train:train", "simulated": "workers.simulated.trainer:simulate"}


def import_function(target: str, workdir: str = "", params: tuple[str, ...] = ("trial", "ctx"),
                    relative: str = "") -> Callable[..., Any]:
    """The function at ``target`` ("package.module:function"), importable from ``workdir`` (the
    spec's directory) as well as the installed packages; raises TrainerLoadError naming it."""
    module, _, name = target.partition(":")
    where = resolve_workdir(workdir, relative)
    if where not in sys.path:
        sys.path.append(where)  # after the installed packages: a file beside the spec never shadows them
    try:
        mod = importlib.import_module(module)
    except Exception as e:  # ImportError, or any error raised while the module runs
        raise TrainerLoadError(f"{target}: cannot import {module} ({type(e).__name__}: {e}; expected a module on "
                               f"the Python path or in {where})") from None
    fn = getattr(mod, name, None)
    if fn is None:
        raise TrainerLoadError(f"{target}: module {module} has no {name!r}")
    check_function(fn, target, params)
    return fn


def check_function(fn: Any, target: str, params: tuple[str, ...] = ("trial", "ctx")) -> None:
    """Raise TrainerLoadError unless ``fn`` can be called with ``len(params)`` positional arguments."""
    if not callable(fn):
        raise TrainerLoadError(f"{target}: not a function (got {type(fn).__name__})")
    try:
        inspect.signature(fn).bind(*params)
    except TypeError:
        raise TrainerLoadError(f"{target}: wrong signature {inspect.signature(fn)} (expected "
                               f"{target.partition(':')[2]}({', '.join(params)}))") from None
    except ValueError:  # a builtin without a signature: it will be called and fail at run time if wrong
        pass


def trainer_for(cfg: TrialConfig) -> Callable[..., Any]:
    """The callable ``fn(trial, ctx)`` that trains ``cfg``."""
    if cfg.trainer == "command":
        from workers.trainers.command import CommandTrainer

        return CommandTrainer(cfg.runner, cfg.workdir, cfg.workdir_rel)
    if cfg.trainer == "function":
        return import_function(cfg.runner.function, cfg.workdir, relative=cfg.workdir_rel)
    if cfg.trainer not in BUILTIN:
        raise TrainerLoadError(f"unknown trainer {cfg.trainer!r} (expected one of {', '.join(BUILTIN)}, function "
                               "or command)")
    return import_function(BUILTIN[cfg.trainer])


def trial_for(cfg: TrialConfig) -> Trial:
    """The trial as its trainer sees it (the contract of workers.trainers.interface)."""
    settings: dict = {}
    model = dict(cfg.model or {})
    if cfg.trainer == "gpt":
        from workers.gpt.train import model_settings

        model = model_settings(cfg.shape, cfg.mup_base_width, cfg.moe_aux_loss)
    elif cfg.trainer == "simulated":
        settings = {"world": cfg.world.model_dump(mode="json") if cfg.world is not None else None}
    elif cfg.runner is not None:
        settings = dict(cfg.runner.settings)
    t = cfg.train
    cooldown = t.cooldown.model_dump(mode="json") if t.cooldown is not None else None
    return Trial(
        trial_id=cfg.trial_id, seed=cfg.seed, n_params=cfg.n_params, tokens=cfg.tokens, lr=float(t.lr),
        batch_tokens=int(t.batch_tokens), steps=cfg.steps, model=model, size=cfg.size_name,
        schedule={"kind": t.schedule, "warmup_fraction": t.warmup_fraction, "min_lr_ratio": t.min_lr_ratio,
                  "cooldown": cooldown},
        train=t.model_dump(mode="json"), settings=settings,
        data=cfg.data.model_dump(mode="json") if cfg.data is not None else None,
        role=cfg.role.value, stem_id=cfg.stem_id, start_step=cfg.start_step, stops=tuple(cfg.stops),
        budget=cfg.budget, name=cfg.name, sweep=cfg.sweep, variant=cfg.variant, threads=cfg.threads,
        device=cfg.device, cache_dir=cfg.cache_dir, workers=cfg.workers, strategy=cfg.strategy,
        eval_tasks=tuple(t.name for t in cfg.evals.tasks) if cfg.evals is not None else (),
        evals=cfg.evals.model_dump(mode="json") if cfg.evals is not None else None,
    )
