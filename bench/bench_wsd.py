"""Run reuse on real training: the quickstart's points with cosine per point against wsd branches.

Trains specs/quickstart.yaml (each point a cosine run over its own D) and specs/wsd.yaml (the
same 13 points: warmup-stable-decay, each point a 20 % (1-sqrt) cooldown branched off its
shape's stem) with `scalesweep run`, as a user would, then compares them point by point:

- each point's held-out loss, wsd against cosine (relative difference, and its mean);
- the fitted a (N_opt ∝ C^a) of each sweep with its 80 % interval, and whether each estimate lies
  inside the other's interval;
- the FLOPs each computed (`scalesweep status --json`: flops_spent, flops_points) and its wall time.

    python -m bench.bench_wsd                         # both sweeps, ~10-15 min on 2 cores
    python -m bench.bench_wsd --cosine results/quickstart   # reuse a finished quickstart

Writes docs/wsd_bench.json; docs/benchmarks.md ("Run reuse") quotes it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time

import pandas as pd

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _cli(*args: str) -> str:
    out = subprocess.run([sys.executable, "-m", "orchestrator.cli", *args], cwd=ROOT, capture_output=True, text=True)
    if out.returncode:
        raise SystemExit(f"scalesweep {' '.join(args)} failed ({out.returncode}): {out.stderr.strip()}")
    return out.stdout


def run(spec: str, results: str) -> float:
    t0 = time.monotonic()
    _cli("run", spec, "--results", results, "--no-dashboard")
    return time.monotonic() - t0


def summary(path: str) -> dict:
    fit = json.loads(_cli("fit", path, "--json"))
    status = json.loads(_cli("status", path, "--json"))
    a = fit["intervals"].get("a", {})
    trials = pd.read_parquet(os.path.join(path, "trials"))
    points = trials[trials.get("role", pd.Series("point", index=trials.index)).fillna("point") != "stem"]
    return {"a": fit["a"], "a_80": a.get("80%"), "a_95": a.get("95%"), "flops_spent": status["flops_spent"],
            "flops_points": status["flops_points"], "stem_segments": status["stem_segments"],
            "wall_s_in_trials": status["wall_s"],
            "points": points[["n_params", "tokens", "eval_loss"]].sort_values(["n_params", "tokens"]).values.tolist()}


def inside(x: float, interval) -> bool | None:
    return None if not interval else bool(interval[0] <= x <= interval[1])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--results", default="results/bench-wsd", help="where both sweeps write")
    p.add_argument("--cosine", help="a finished quickstart results directory to compare against (not re-run)")
    p.add_argument("--out", default=os.path.join(ROOT, "docs", "wsd_bench.json"))
    args = p.parse_args(argv)
    times = {}
    cosine = args.cosine
    if cosine is None:
        times["cosine"] = run("specs/quickstart.yaml", args.results)
        cosine = os.path.join(args.results, "quickstart")
    times["wsd"] = run("specs/wsd.yaml", args.results)
    wsd = os.path.join(args.results, "wsd")
    c, w = summary(cosine), summary(wsd)
    cos_loss = {(n, d): l for n, d, l in c["points"]}
    diffs = [{"n_params": n, "tokens": d, "cosine": cos_loss[(n, d)], "wsd": l, "rel": l / cos_loss[(n, d)] - 1}
             for n, d, l in w["points"] if (n, d) in cos_loss]
    rel = [x["rel"] for x in diffs]
    out = {
        "machine": f"{platform.machine()} {os.cpu_count()} cores", "date": time.strftime("%Y-%m-%d"),
        "wall_s": times, "cosine": c, "wsd": w, "per_point": diffs,
        "matched_points": len(diffs), "mean_rel": sum(rel) / len(rel), "mean_abs_rel": sum(map(abs, rel)) / len(rel),
        "max_abs_rel": max(map(abs, rel)),
        "wsd_a_in_cosine_80": inside(w["a"], c["a_80"]), "cosine_a_in_wsd_80": inside(c["a"], w["a_80"]),
        "flops_ratio": w["flops_spent"] / c["flops_spent"],
    }
    with open(args.out, "w") as f:
        json.dump(out, f, indent=1)
    print(f"{len(diffs)} points: wsd/cosine - 1 mean {out['mean_rel']:+.2%}, mean |.| {out['mean_abs_rel']:.2%}, "
          f"max |.| {out['max_abs_rel']:.2%}")
    for x in diffs:
        print(f"  N={x['n_params']:>7} D={x['tokens']:>8}: cosine {x['cosine']:.4f} wsd {x['wsd']:.4f} ({x['rel']:+.2%})")
    print(f"a: cosine {c['a']:.3f} {c['a_80']}, wsd {w['a']:.3f} {w['a_80']}; each inside the other's 80 %: "
          f"{out['wsd_a_in_cosine_80']}, {out['cosine_a_in_wsd_80']}")
    print(f"FLOPs: wsd {w['flops_spent']:.3g} against cosine {c['flops_spent']:.3g} ({out['flops_ratio']:.0%}); "
          f"wall {times}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
