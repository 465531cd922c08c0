"""What task evaluations add to a trial's wall time (docs/benchmarks.md, "Task evaluations").

The quickstart's trials (specs/quickstart.yaml, 1 thread each), each run twice in this process,
without and with the built-in tasks (``evals: {tasks: [brackets, identifier, next_line]}``, at
each of the trial's held-out evaluations), alternating which goes first. Goal: at most 10 % more
wall time on the quickstart.

Scoring cost is proportional to N (forward passes over a fixed number of tokens), training to
C = 6ND, so the per-trial overhead is largest for the trial with the fewest tokens. Besides each
measured trial, the script extrapolates to the whole quickstart: the scoring seconds per
parameter and the training seconds per FLOP measured here, summed over all 13 trials.

    python -m bench.bench_evals [--trials 0,3,12] [--n-items 500] [--out docs/evals_bench.json]
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
from workers.entry import run_trial
from workers.evals.config import EvalsConfig

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TASKS = ["brackets", "identifier", "next_line"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", default="", help="indices of the quickstart's trials by tokens (default: fewest, "
                    "median, most)")
    ap.add_argument("--n-items", type=int, default=None, help="items per built-in task (default: the section's)")
    ap.add_argument("--out", default=os.path.join(ROOT, "docs", "evals_bench.json"))
    args = ap.parse_args()
    t0 = time.time()
    spec = load_spec(os.path.join(ROOT, "specs", "quickstart.yaml"))
    evals = {"tasks": TASKS} | ({"n_items": args.n_items} if args.n_items else {})
    cfg_evals = EvalsConfig.model_validate(evals)
    trials = sorted(plan_trials(spec, TrialFactory(spec)), key=lambda t: t.tokens)
    pick = [int(i) for i in args.trials.split(",")] if args.trials else [0, len(trials) // 2, len(trials) - 1]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for k, i in enumerate(pick):
            base = dataclasses.replace(trials[i], results=os.path.join(tmp, f"plain{i}"))
            timed = {}
            order = (("plain", base), ("evals", dataclasses.replace(base, evals=cfg_evals,
                                                                     results=os.path.join(tmp, f"evals{i}"))))
            for name, cfg in (order if k % 2 == 0 else order[::-1]):
                start = time.perf_counter()
                r = run_trial(cfg)
                timed[name] = time.perf_counter() - start
                assert r.status.value == "completed", r.error
            rows.append({"trial": trials[i].name, "n_params": trials[i].n_params, "tokens": trials[i].tokens,
                         "plain_s": timed["plain"], "evals_s": timed["evals"],
                         "overhead": timed["evals"] / timed["plain"] - 1})
            print(f"{trials[i].name}: {timed['plain']:.1f} s plain, {timed['evals']:.1f} s with tasks "
                  f"(+{rows[-1]['overhead']:.1%})", flush=True)
    # The whole quickstart: scoring seconds per parameter, training seconds per FLOP, measured above.
    per_n = sum((r["evals_s"] - r["plain_s"]) / r["n_params"] for r in rows) / len(rows)
    per_c = sum(r["plain_s"] / (6 * r["n_params"] * r["tokens"]) for r in rows) / len(rows)
    scoring = sum(per_n * t.n_params for t in trials)
    training = sum(per_c * 6 * t.n_params * t.tokens for t in trials)
    summary = {"tasks": TASKS, "n_items": cfg_evals.n_items, "evaluations_per_trial": spec.train.n_evals + 1,
               "trials": rows, "quickstart_overhead": scoring / training, "goal": 0.10}
    write(args.out, meta("bench.bench_evals", t0), summary, rows)


if __name__ == "__main__":
    main()
