"""scalesweep's public face: what a lab's trainer imports, and loading a sweep's results.

A Python trainer (named in a spec as ``trainer: {function: mylab.scaling:train}``)::

    from scalesweep import Context, Outcome, Trial, lr_at

    def train(trial: Trial, ctx: Context) -> Outcome:
        ...                                   # build trial.model, train trial.tokens tokens
        ctx.report(step, tokens, train_loss=..., eval_loss=..., lr=lr_at(trial, step))
        if ctx.tasks_due(final=step == trial.steps):  # the spec's evals: tasks, if any
            ctx.evaluate_tasks(step, tokens, lambda ids: model(ids), max_len=context_len)
        ...
        return Outcome(eval_loss=final, n_params=exact_n)

Its contract test suite is :class:`scalesweep.testing.TrainerContract`. A command trainer
needs nothing from here (its contract is files and environment variables: docs/trainers.md); its script may score the trial's tasks with ``score_tasks`` and write the rows to
``evals.jsonl``. ``load_trials``, ``load_steps`` and ``load_evals`` read a results directory as
DataFrames.

The implementation lives in ``orchestrator/`` (planning, running, fitting) and ``workers/``
(trainers, the result store); names are imported on first use, so a trainer that imports the
contract pulls in neither torch nor the orchestrator.
"""

from workers import lazy_getattr

_EXPORTS = {
    "Context": "workers.trainers.interface", "Outcome": "workers.trainers.interface",
    "Trial": "workers.trainers.interface", "TrialError": "workers.trainers.interface",
    "lr_at": "scalesweep.schedule",
    "load_trials": "orchestrator.results", "load_steps": "orchestrator.results",
    "load_evals": "orchestrator.results", "score_tasks": "workers.evals.suite",
}

__all__ = sorted(_EXPORTS)

__getattr__ = lazy_getattr("scalesweep", _EXPORTS)
