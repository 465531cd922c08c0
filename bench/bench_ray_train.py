"""Trials on Ray Train against plain Ray tasks (docs/benchmarks.md, "Trials on several ranks").

One fixed GPT trial (``--n`` parameters, ``--tokens`` tokens, the quickstart's model rule and
data) run on a local Ray, three ways, in alternating order over ``--repeats`` rounds so the
machine's drift falls on all of them alike:

- **task**: one Ray task, as every single-rank trial runs (``RayExecutor``);
- **train1**: Ray Train's TorchTrainer with one rank (``workers.run.distributed.run_distributed``);
- **train2**: Ray Train with two ranks (DDP, gloo), each with one thread: the global batch split.

Reported per way: the trial's own tokens per second (tokens over the row's wall_s, which starts
when the trainer is called) and the end-to-end seconds from submission to the committed row
(Ray Train adds a controller, a placement group and a process group). Goals: train1 at least 0.97
of task's tokens/s; train2 against task is the CPU scaling of 2 ranks on this machine's 2 cores.

    python -m bench.bench_ray_train [--n 2.2e5] [--tokens 1.5e6] [--repeats 2] [--out docs/ray_train_bench.json]
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import tempfile
import time

from bench.record import meta, write

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _trial(n: float, tokens: float, results: str):
    from orchestrator.planning.trials import TrialFactory
    from orchestrator.spec import load_spec

    spec = load_spec(os.path.join(ROOT, "specs", "quickstart.yaml"))
    factory = TrialFactory(spec)
    trial = factory.make(n, tokens, 0.0, 0, "--n/--tokens")
    return dataclasses.replace(trial, results=results)


def _run(way: str, trial) -> dict:
    import ray

    from orchestrator.running.executor import RayExecutor
    from workers.run.distributed import run_distributed

    t0 = time.perf_counter()
    if way == "task":
        ex = RayExecutor(1, 0, 0)
        ex.submit(trial)
        done = []
        while not done:
            done = ex.wait(5.0)
        result = done[0].result
    else:
        k = 2 if way == "train2" else 1
        cfg = dataclasses.replace(trial, workers=k, strategy="ddp")
        result = ray.get(ray.remote(num_cpus=0)(run_distributed).remote(cfg, 0))
    end_to_end = time.perf_counter() - t0
    row = result.row
    return {"way": way, "status": row["status"], "eval_loss": row["eval_loss"], "wall_s": row["wall_s"],
            "end_to_end_s": end_to_end, "tokens_per_s": row["tokens_per_s"]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=float, default=2.2e5)
    p.add_argument("--tokens", type=float, default=1.5e6)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--out", default=os.path.join(ROOT, "docs", "ray_train_bench.json"))
    args = p.parse_args()
    os.environ.setdefault("RAY_AUTH_MODE", "token")
    from orchestrator.running.cluster import connect

    t0 = time.time()
    connect(None, "token", num_cpus=2, dashboard=False)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.repeats):
            order = ["task", "train1", "train2"] if r % 2 == 0 else ["train2", "train1", "task"]
            for way in order:
                trial = _trial(args.n, args.tokens, os.path.join(tmp, f"{way}-{r}"))
                rows.append({"round": r, **_run(way, trial)})
                print(rows[-1])
    by = {w: [x for x in rows if x["way"] == w] for w in ("task", "train1", "train2")}
    tps = {w: statistics.mean(x["tokens_per_s"] for x in v) for w, v in by.items()}
    summary = {
        "trial": {"n_params": rows[0] and _trial(args.n, args.tokens, "/tmp").n_params, "tokens": int(args.tokens)},
        "tokens_per_s": tps,
        "end_to_end_s": {w: statistics.mean(x["end_to_end_s"] for x in v) for w, v in by.items()},
        "train1_over_task": tps["train1"] / tps["task"],
        "train2_over_task": tps["train2"] / tps["task"],
        "eval_loss": {w: [x["eval_loss"] for x in v] for w, v in by.items()},
    }
    write(args.out, meta("bench.bench_ray_train", t0), summary, rows)


if __name__ == "__main__":
    main()
