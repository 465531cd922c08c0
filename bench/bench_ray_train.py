"""Trials on Ray Train against plain Ray tasks (docs/benchmarks.md, "Trials on several ranks").

One fixed GPT trial (``--n`` parameters, ``--tokens`` tokens, the quickstart's model rule and
data) run on a local Ray, three ways, in alternating order over ``--repeats`` rounds so the
machine's drift falls on all of them alike:

- **task**: one Ray task, as every single-rank trial runs (``RayExecutor``);
- **train1**: Ray Train's TorchTrainer with one rank (``workers.run.distributed.run_distributed``);
- **train2** (or trainK for each K of ``--ranks``): Ray Train with K ranks (DDP; gloo on CPUs,
  NCCL with ``--gpus 1``), each with one thread (or one GPU): the global batch split.

Reported per way: the trial's own tokens per second (tokens over the row's wall_s, which starts
when the trainer is called) and the end-to-end seconds from submission to the committed row
(Ray Train adds a controller, a placement group and a process group). Goals: train1 at least 0.97
of task's tokens/s; train2 against task is the CPU scaling of 2 ranks on this machine's 2 cores.

    python -m bench.bench_ray_train [--n 2.2e5] [--tokens 1.5e6] [--repeats 2] [--ranks 2] [--gpus 0]
                                    [--out docs/ray_train_bench.json]

On a multi-GPU machine (not yet lent to this project): ``--gpus 1 --ranks 2,4,8 --n 1.2e8``
gives Ray Train's scaling over one GPU per rank (goal: 0.9 of linear with DDP).
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
        ex = RayExecutor(1, trial.gpus, 0)
        ex.submit(trial)
        done = []
        while not done:
            done = ex.wait(5.0)
        result = done[0].result
    else:
        k = int(way.removeprefix("train"))
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
    p.add_argument("--ranks", default="2", help="rank counts to run on Ray Train besides 1, comma separated")
    p.add_argument("--gpus", type=float, default=0.0, help="GPUs per rank (0: CPUs)")
    p.add_argument("--out", default=os.path.join(ROOT, "docs", "ray_train_bench.json"))
    args = p.parse_args()
    os.environ.setdefault("RAY_AUTH_MODE", "token")
    from orchestrator.running.cluster import connect

    t0 = time.time()
    ways = ["task", "train1"] + [f"train{int(k)}" for k in args.ranks.split(",") if int(k) > 1]
    connect(None, "token", num_cpus=max(2, os.cpu_count() or 2), dashboard=False)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.repeats):
            for way in (ways if r % 2 == 0 else ways[::-1]):
                trial = _trial(args.n, args.tokens, os.path.join(tmp, f"{way}-{r}"))
                if args.gpus:
                    trial = dataclasses.replace(trial, gpus=args.gpus, device="cuda")
                rows.append({"round": r, **_run(way, trial)})
                print(rows[-1])
    by = {w: [x for x in rows if x["way"] == w] for w in ways}
    tps = {w: statistics.mean(x["tokens_per_s"] for x in v) for w, v in by.items()}
    summary = {
        "trial": {"n_params": _trial(args.n, args.tokens, "/tmp").n_params, "tokens": int(args.tokens),
                  "gpus_per_rank": args.gpus},
        "tokens_per_s": tps,
        "end_to_end_s": {w: statistics.mean(x["end_to_end_s"] for x in v) for w, v in by.items()},
        "over_task": {w: tps[w] / tps["task"] for w in ways},
        "eval_loss": {w: [x["eval_loss"] for x in v] for w, v in by.items()},
    }
    write(args.out, meta("bench.bench_ray_train", t0), summary, rows)


if __name__ == "__main__":
    main()
