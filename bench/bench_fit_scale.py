"""The whole fit (``analyse``) on random (N, D) designs of 10,000 and a million runs: wall time
and peak memory, each size in a fresh process.

    python -m bench.bench_fit_scale                          # 10,000 and 1,000,000 runs
    python -m bench.bench_fit_scale --runs 10000 --repeat 3  # best and median of 3
    python -m bench.bench_fit_scale --write docs/benchmarks.md

A design is log-uniform N in [1e6, 1e10] and D in [1e8, 1e12], losses from the T0 law of
bench/worlds.py times exp(normal(0, 0.01)): no budgets and no IsoFLOP groups, a design
from which inferring budgets from C would give thousands of one-run groups. Each size runs in a child process, so its
peak resident memory (``ru_maxrss``, the process's high-water mark, the table included) is its
own; the child also checks the intervals against the truth the design was drawn from.
``analyse`` is called as ``scalesweep fit`` calls it: 1,000 resamples asked for, target 1e22.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

from bench.bench_fit import write_section
from bench.worlds import VISIBLE_LAWS, law_spec

ROOT = Path(__file__).resolve().parents[1]

T0 = law_spec(VISIBLE_LAWS["T0"])
TARGET = 1e22
HEADING = "## Fit scale: "
CHANGES = (
    'What changes with size (printed as notes, and in `--json` under `bootstrap.refits`, '
    '`bootstrap.requested` and `notes`): from 5,000 runs each resample is one Newton step from the full fit '
    "with the Huber loss's exact curvature, not an exact refit (its spread matched exact refits within 2.5 % "
    'at 10,000 runs and 1 % at 100,000, correlation 0.999 per resample); resamples x runs are capped at 2e8, '
    "so a million runs get 200 resamples; the residual model's REML hyperparameters come from 300 random runs"
    ' and its sandwich is summed on a grid (0.02-0.13 % from the exact sum at 10,000 runs); the global '
    "search's basins come from 50,000 random runs and the winner is polished on all. Before these changes 50 "
    "resamples of 10,000 such runs took 45 s here under a profiler (31 s of it Approach 2's bootstrap over "
    'chance groups of C), and the issue saw a million runs reach 16 GB. These designs have no smooth residual'
    " field, so REML finds none (or 0.008 nats) and the intervals are the bootstrap's, narrow because the "
    'runs are many; three designs per size make the coverage counts a sanity check, not a rate.')


def child(runs: int, n_boot: int, seed: int) -> dict:
    """One fit in this process: the measurements as a dict (printed as JSON by ``--child``)."""
    import numpy as np
    import pandas as pd

    from orchestrator.fitting.analysis import analyse
    from orchestrator.report.text import format_fit
    from orchestrator.fitting.law import LawParams, compute_optimal, predict_loss

    law = LawParams(**T0)
    rng = np.random.default_rng(seed)
    n, d = 10 ** rng.uniform(6, 10, runs), 10 ** rng.uniform(8, 12, runs)
    loss = predict_loss(law, n, d) * np.exp(rng.normal(0.0, 0.01, runs))
    table = pd.DataFrame({"status": "completed", "n_params": n, "tokens": d, "eval_loss": loss})
    t0 = time.perf_counter()
    fit = analyse(table, TARGET, n_boot=n_boot, seed=seed)
    wall = time.perf_counter() - t0
    text = format_fit(fit)
    truth = {"a": law.a, "alpha": law.alpha, "beta": law.beta, "E": law.E,
             "n_opt": compute_optimal(law, TARGET)["n_opt"]}
    iv = {k: fit.intervals[k] for k in truth}
    return {
        "runs": runs, "seconds": wall, "peak_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
        "resamples": fit.bootstrap.n_boot, "requested": n_boot, "refits": fit.bootstrap.refits,
        "budgets": len(fit.minima), "approach2": fit.unavailable.get("approach2", "fitted"),
        "covered_80": {k: bool(v.contains(truth[k], 0.80)) for k, v in iv.items()},
        "width_80": {k: v.width(0.80) for k, v in iv.items()},
        "field_sd": fit.discrepancy.s_r if fit.discrepancy else None, "notes": fit.notes, "flags": fit.flags,
        "header": next(line for line in text.splitlines() if "bootstrap resamples" in line).strip(),
    }


def measure(runs: int, n_boot: int, repeat: int) -> list[dict]:
    out = []
    for i in range(repeat):
        proc = subprocess.run([sys.executable, "-m", "bench.bench_fit_scale", "--child", str(runs), str(n_boot), str(i)],
                              cwd=ROOT, capture_output=True, text=True)
        if proc.returncode:
            sys.exit(f"bench_fit_scale: the {runs}-run fit failed:\n{proc.stderr[-3000:]}")
        out.append(json.loads(proc.stdout.splitlines()[-1]))
        print(f"{runs:>9,} runs, seed {i}: {out[-1]['seconds']:.1f} s, peak {out[-1]['peak_gb']:.2f} GB", flush=True)
    return out


def section(results: dict[int, list[dict]]) -> str:
    host = f"{platform.machine()}, {os.cpu_count()} cores shared with two other engineers' jobs, Python " \
           f"{platform.python_version()}"
    lines = [HEADING + "random designs of 10,000 and a million runs", "",
             f"Measured by `python -m bench.bench_fit_scale` on {datetime.date.today().isoformat()} ({host}); "
             "each size in a fresh process, seeds 0, 1, ... (one design per repeat). Design: log-uniform N in "
             "[1e6, 1e10] and D in [1e8, 1e12], the T0 law, 1 % log-normal noise, no budget column; `analyse` "
             "with 1,000 resamples asked for, target 1e22.", "",
             "| runs | wall time: best / median | peak RSS: max | resamples | refits | Approach 2 | goal |",
             "|---|---|---|---|---|---|---|"]
    goals = {10_000: "under 20 s", 1_000_000: "under 3 min and 4 GB"}
    for runs, rs in results.items():
        t = [r["seconds"] for r in rs]
        a2 = "skipped (C not clustered)" if rs[0]["approach2"].startswith("skipped") else rs[0]["approach2"]
        lines.append(f"| {runs:,} | {min(t):.1f} s / {statistics.median(t):.1f} s ({len(rs)} runs) | "
                     f"{max(r['peak_gb'] for r in rs):.2f} GB | {rs[0]['resamples']} of {rs[0]['requested']} | "
                     f"{rs[0]['refits']} | {a2} | "
                     f"{goals.get(runs, '')} |")
    lines.extend(["", CHANGES, ""])
    for runs, rs in results.items():
        r = rs[0]
        cov = ", ".join(f"{k} {sum(x['covered_80'][k] for x in rs)}" for k in r["covered_80"])
        width = ", ".join(f"{k} {v:.3g}" for k, v in r["width_80"].items())
        fields = ", ".join(f"{x['field_sd']:.2g}" for x in rs)
        lines.append(f"{runs:,} runs: designs (of {len(rs)}) whose 80 % intervals contain the true {cov}; seed 0's "
                     f"widths {width}; residual field found by REML {fields} "
                     f"nats; flags: {'; '.join(r['flags']) or 'none'}. The fit prints \"{r['header']}\" and the notes:")
        lines.extend(f"- {note}" for note in r["notes"])
        lines.append("")
    return "\n".join(lines)


def main() -> int:
    if len(sys.argv) == 5 and sys.argv[1] == "--child":
        print(json.dumps(child(*(int(x) for x in sys.argv[2:]))))
        return 0
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, nargs="*", default=[10_000, 1_000_000])
    ap.add_argument("--bootstrap", type=int, default=1000, help="resamples asked for (default 1000)")
    ap.add_argument("--repeat", type=int, default=1, help="fits per size (best and median are reported)")
    ap.add_argument("--write", metavar="MARKDOWN", help="rewrite this benchmark's section of the file")
    args = ap.parse_args()
    text = section({runs: measure(runs, args.bootstrap, args.repeat) for runs in args.runs})
    print(text)
    if args.write:  # bench_fit's writer: the same "replace my section, keep the rest" rule
        write_section(Path(args.write), text, heading=HEADING)
    return 0


if __name__ == "__main__":
    sys.exit(main())
