"""Task accuracy on the stdlib sweep, and the largest budget predicted from the smaller ones
(docs/benchmarks.md, "Task evaluations on the stdlib sweep").

Runs specs/tasks.yaml (the quickstart's 13 trials with the built-in tasks scored at each
held-out evaluation) on the embedded Ray, unless ``--results`` names a finished copy; then

1. accuracy curves: every task's accuracy and task loss at every checkpoint against compute
   (a PNG and the final checkpoints' table);
2. a held-out check of the two-step prediction: the downstream fit of the runs below the largest
   budget, its predictions at the largest budget's runs (their N and D), the errors against what
   those runs observed, and whether the observations fall in the 80 % and 95 % intervals.

    python -m bench.bench_tasks_sweep [--results results/tasks] [--n-boot 1000]
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np

from bench.record import meta, write

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run_sweep() -> str:
    from orchestrator.spec import load_spec
    from orchestrator.sweep import run_sweep

    spec = load_spec(os.path.join(ROOT, "specs", "tasks.yaml"))
    out = run_sweep(spec, write_report=False)
    return out.results


def _curves(data, trials, path: str) -> list[dict]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from workers.flops import train_flops

    frame = data.frame.merge(trials[["trial_id", "budget"]], left_on="run", right_on="trial_id")
    tasks = data.tasks
    fig, axes = plt.subplots(1, len(tasks), figsize=(4.2 * len(tasks), 3.6), dpi=110, squeeze=False)
    rows = []
    for ax, task in zip(axes[0], tasks):
        sub = frame[frame["task"] == task]
        for run, g in sub.groupby("run"):
            g = g.sort_values("step")
            c = train_flops(g["n"].to_numpy(float), g["d"].to_numpy(float))
            ax.plot(c, g["acc"], marker=".", lw=0.8, alpha=0.8)
            last = g.iloc[-1]
            rows.append({"task": task, "run": run, "budget": float(last["budget"]), "n": float(last["n"]),
                         "d": float(last["d"]), "task_bpb": float(last["task_loss"]), "acc": float(last["acc"])})
        ax.axhline(float(sub["chance"].median()), color="black", ls="--", lw=0.8)
        ax.set_xscale("log")
        ax.set_title(task, fontsize=10)
        ax.set_xlabel("compute at the checkpoint (FLOPs, 6ND)")
    axes[0][0].set_ylabel("accuracy (each line a run)")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return rows


def _held_out(data, trials, n_boot: int) -> dict:
    from orchestrator.fitting.downstream import fit_downstream, predict

    top = float(trials["budget"].max())
    held = trials[trials["budget"] == top]
    train_ids = set(trials[trials["budget"] < top]["trial_id"])
    full = data.frame
    data.frame = full[full["run"].isin(train_ids)]
    fit = fit_downstream(data, n_boot=n_boot, seed=0)
    data.frame = full
    finals = full.sort_values("step").groupby(["run", "task"]).tail(1).set_index(["run", "task"])
    held = held[held["trial_id"].isin(full["run"])]
    rows = predict(fit, held["n_params"].to_numpy(float), held["tokens"].to_numpy(float), list(held["trial_id"]))
    out = []
    for r in rows:
        obs = finals.loc[(r["point"], r["task"])]
        a, tl = r["accuracy"], r["task_loss"]
        out.append({"task": r["task"], "run": r["point"], "n": r["n"], "d": r["d"], "observed_acc": float(obs["acc"]),
                    "predicted_acc": a["estimate"], "acc_80": a["80%"], "acc_95": a["95%"],
                    "observed_task_bpb": float(obs["task_loss"]), "predicted_task_bpb": tl["estimate"],
                    "bpb_95": tl["95%"], "one_step_acc": r["baselines"].get("one_step"),
                    "in_80": bool(a["80%"][0] <= obs["acc"] <= a["80%"][1]),
                    "in_95": bool(a["95%"][0] <= obs["acc"] <= a["95%"][1])})
    err = np.array([o["predicted_acc"] - o["observed_acc"] for o in out])
    per_task = {}
    for task in data.tasks:
        mine = [o for o in out if o["task"] == task]
        e = np.array([o["predicted_acc"] - o["observed_acc"] for o in mine])
        per_task[task] = {"mae": float(np.mean(np.abs(e))) if len(e) else None,
                          "in_80": int(sum(o["in_80"] for o in mine)), "in_95": int(sum(o["in_95"] for o in mine)),
                          "cases": len(mine)}
    return {"held_out_budget": top, "fitted_runs": len(train_ids), "cases": len(out),
            "mae": float(np.mean(np.abs(err))) if len(err) else None,
            "in_80": int(sum(o["in_80"] for o in out)), "in_95": int(sum(o["in_95"] for o in out)),
            "per_task": per_task, "skipped": fit.skipped, "rows": out}


def main() -> None:
    from orchestrator.fitting.downstream import downstream_data_from_results
    from orchestrator.results import open_results, point_rows

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--results", default=None, help="a finished results directory of specs/tasks.yaml (default: run it)")
    ap.add_argument("--n-boot", type=int, default=1000)
    ap.add_argument("--out", default=os.path.join(ROOT, "docs", "tasks_sweep_bench.json"))
    ap.add_argument("--png", default=os.path.join(ROOT, "docs", "tasks_sweep.png"))
    args = ap.parse_args()
    t0 = time.time()
    results = args.results or _run_sweep()
    store = open_results(results)
    trials = point_rows(store.read_table("trials").to_pandas())
    trials = trials[trials["status"] == "completed"]
    data = downstream_data_from_results(store)
    curves = _curves(data, trials, args.png)
    summary = {"results": results, "curves_png": os.path.relpath(args.png, ROOT), "final_checkpoints": curves,
               "held_out": _held_out(data, trials, args.n_boot)}
    write(args.out, meta("bench.bench_tasks_sweep", t0), summary, summary["held_out"]["rows"])


if __name__ == "__main__":
    main()
