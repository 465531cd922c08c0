"""What task evaluations add to a trial's wall time (docs/benchmarks.md, "Task evaluations").

Quickstart trials (specs/quickstart.yaml, 1 thread each) trained once each with the built-in
tasks scored at every held-out evaluation (``evals: {tasks: [...]}``), through the GPT trainer
and its context in this process. The context times its ``evaluate_tasks`` calls, so the
overhead is read within one run (scoring seconds / the rest of the trial's seconds), which the
machine's load changes far less than a comparison of two runs minutes apart. The suite is built
(tasks generated, encoded) before the clock starts, as a Ray worker does once for all its trials.
Goal: at most 10 % more wall time on the quickstart.

Scoring cost is proportional to N (forward passes over a fixed number of tokens), training to
C = 6ND, so the overhead is largest for the trial with the fewest tokens. Besides each measured
trial, the whole quickstart's overhead: the scoring seconds per parameter and the training
seconds per FLOP measured here, summed over its 13 trials.

    python -m bench.bench_evals [--trials 0,3,6,12] [--tasks brackets,indent,identifier] [--n-items 300]
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import tempfile
import time

from bench.record import meta, write
from orchestrator.planning.trials import TrialFactory, plan_trials
from orchestrator.spec import load_spec
from workers.evals.config import EvalsConfig
from workers.evals.suite import suite_for
from workers.gpt.train import train
from workers.store import ResultStore
from workers.trainers.interface import Context
from workers.trainers.loading import trial_for

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", default="0,4,8,12", help="indices of the quickstart's trials sorted by tokens")
    ap.add_argument("--tasks", default="brackets,indent,identifier")
    ap.add_argument("--n-items", type=int, default=None, help="items per built-in task (default: the section's)")
    ap.add_argument("--out", default=os.path.join(ROOT, "docs", "evals_bench.json"))
    args = ap.parse_args()
    t0 = time.time()
    spec = load_spec(os.path.join(ROOT, "specs", "quickstart.yaml"))
    evals = EvalsConfig.model_validate({"tasks": args.tasks.split(",")}
                                       | ({"n_items": args.n_items} if args.n_items else {}))
    trials = sorted(plan_trials(spec, TrialFactory(spec)), key=lambda t: t.tokens)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for i in (int(x) for x in args.trials.split(",")):
            cfg = dataclasses.replace(trials[i], evals=evals, results=os.path.join(tmp, str(i)))
            trial = trial_for(cfg)
            suite_for(trial).encoded(spec.model.seq_len)  # built once per worker process, before the clock
            ctx = Context(trial, ResultStore(cfg.results))
            start = time.perf_counter()
            train(trial, ctx)
            total = time.perf_counter() - start
            rows.append({"trial": cfg.name, "n_params": cfg.n_params, "tokens": cfg.tokens, "wall_s": total,
                         "scoring_s": ctx.task_s, "evaluations": len({r["step"] for r in ctx.evals}),
                         "overhead": ctx.task_s / (total - ctx.task_s)})
            print(f"{cfg.name}: {total:.1f} s, {ctx.task_s:.1f} s of it scoring tasks (+{rows[-1]['overhead']:.1%})",
                  flush=True)
    per_n = sum(r["scoring_s"] / r["n_params"] for r in rows) / len(rows)
    per_c = sum((r["wall_s"] - r["scoring_s"]) / (6 * r["n_params"] * r["tokens"]) for r in rows) / len(rows)
    scoring = sum(per_n * t.n_params for t in trials)
    training = sum(per_c * 6 * t.n_params * t.tokens for t in trials)
    summary = {"tasks": list(evals.tasks[i].name for i in range(len(evals.tasks))), "n_items": evals.n_items,
               "evaluations_per_trial": spec.train.n_evals + 1, "trials": rows,
               "quickstart_overhead": scoring / training, "goal": 0.10}
    write(args.out, meta("bench.bench_evals", t0), summary, rows)


if __name__ == "__main__":
    main()
