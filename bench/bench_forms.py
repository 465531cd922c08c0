"""Law forms: does ``--form auto`` choose the generating form, are the predictive intervals
calibrated, does the extrapolation flag stay quiet on right-form sweeps, and how fast is it?

    python -m bench.bench_forms selection --seeds 50       # choice and predictive coverage per world
    python -m bench.bench_forms false-alarms --seeds 50    # flags on right-form sweeps of two designs
    python -m bench.bench_forms speed                      # the timing goals of the law-forms issue

Worlds are simulated by workers.simulated.world (the law as an expression, the
shared/BENCHMARK.md noise: default seed-noise tier, a 0.015-nat smooth residual field over 0.7
decades, 2 % outliers), one world seed per sweep seed. Each world's law is one of the built-in
forms (GENERATING below); its sweep is an IsoFLOP design of 5 budgets (1e17-1e19 FLOPs, half a
decade apart) x 8 sizes around T1's optimum, except n-only's, a table of 24 sizes without D.
Coverage is of the true expected loss (the law plus the world's smooth residual there, without
seed noise or outliers) at the true compute-optimal point of 3x and 10x the largest run's
compute (for n-only: 3x and 10x the largest N), and of a fresh noisy observation there. Results go to docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time

import numpy as np
import pandas as pd

from orchestrator.fitting.analysis import analyse
from orchestrator.fitting.forms.predict import predict_points
from orchestrator.fitting.forms.selection import paired_excess
from workers.config import NoiseConfig, WorldConfig
from workers.simulated.world import World
from workers.flops import tokens_for_budget

U_FIXED = 3e9  # unique tokens of the data-constrained world: budgets above ~1e18 repeat data
GENERATING = {
    "chinchilla": "1.6934 + 406.4/N**0.33917 + 410.7/D**0.28491",  # T1
    "kaplan": "1.6934 + ((2.0e7/N)**(0.33917/0.28491) + 1.5e9/D)**0.28491",
    "farseer": ("exp(0.5*(N/1e9)**-0.34 + log(1.69)) + exp(0.1*(N/1e9)**0.2 + log(410.7))"
                " * D**(-exp(-0.05*(N/1e9)**0.3 + log(0.28)))"),
    "data-constrained": ("1.6934 + 406.4/N**0.33917 + 410.7/(minimum(3e9, D) + minimum(3e9, D)*15*"
                         "(1 - exp(-(D/minimum(3e9, D) - 1)/15)))**0.28491"),
    "n-only": "1.6934 + 406.4/N**0.33917 + 0*D",
}
BUDGETS = np.geomspace(1e17, 1e19, 5)
T1_NOPT = {1e17: 3.1e7, 1e19: 2.4e8}  # T1's N_opt at the ends (the sizes follow it as C^0.456)


def _world(expression: str, seed: int, noise: NoiseConfig | None = None) -> World:
    return World(WorldConfig(expression=expression, noise=noise or NoiseConfig(), seed=seed))


def _isoflop_design(sizes: int = 8, span: float = 1.6) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rows = []
    for c in BUDGETS:
        centre = 3.1e7 * (c / 1e17) ** 0.456
        for x in np.linspace(-span, span, sizes):
            rows.append((centre * math.exp(x), c))
    n, budget = (np.array(v) for v in zip(*rows))
    return n, tokens_for_budget(budget, n), budget


def _observe(world: World, n, d, offset: int = 0) -> np.ndarray:
    return np.array([world.observe(float(a), float(b), key=offset + i) for i, (a, b) in enumerate(zip(n, d))])


def sweep_table(form: str, seed: int) -> tuple[pd.DataFrame, World]:
    world = _world(GENERATING[form], seed)
    if form == "n-only":
        n = np.geomspace(1e6, 1e9, 24)
        loss = _observe(world, n, np.full_like(n, 1e12))
        return pd.DataFrame({"name": [f"r{i}" for i in range(len(n))], "status": "completed", "n_params": n,
                             "tokens": np.nan, "flops": np.nan, "budget": 0.0, "eval_loss": loss}), world
    n, d, budget = _isoflop_design()
    table = pd.DataFrame({"name": [f"r{i}" for i in range(len(n))], "status": "completed", "n_params": n,
                          "tokens": d, "flops": 6 * n * d, "budget": budget, "eval_loss": _observe(world, n, d)})
    if form == "data-constrained":
        table["unique_tokens"] = U_FIXED
    return table, world


def _points(form: str, world: World, table: pd.DataFrame) -> dict:
    """The prediction points: the true optimum at 3x and 10x the largest run (N at 3x, 10x for n-only)."""
    if form == "n-only":
        n = float(table["n_params"].max()) * np.array([3.0, 10.0])
        return {"N": n, "D": np.full(2, 1e12)}
    cmax = float(table["flops"].max())
    opts = [world.compute_optimal(k * cmax) for k in (3.0, 10.0)]
    n = np.array([o["n_opt"] for o in opts])
    X = {"N": n, "D": tokens_for_budget(np.array([3.0, 10.0]) * cmax, n)}
    if form == "data-constrained":
        X["U"] = np.full(2, U_FIXED)
    return X


def _within_noise(fit, a: str, b: str) -> bool:
    """Whether form ``a``'s held-out error is within one SE of form ``b``'s (paired), or a is b."""
    if a == b:
        return True
    sa, sb = fit.comparison.score(a), fit.comparison.score(b)
    if sa is None or sb is None or sa.error or sb.error:
        return False
    excess, se = paired_excess(sa.errors, sb.errors)
    return excess <= se


def selection(seeds: int, n_boot: int) -> dict:
    out = {}
    for form in GENERATING:
        chosen, ok, cover, cover_obs, widths, t0 = [], 0, {3: [], 10: []}, {3: [], 10: []}, [], time.time()
        for seed in range(seeds):
            table, world = sweep_table(form, seed)
            fit = analyse(table, None, n_boot=n_boot, seed=seed, form="auto")
            chosen.append(fit.form.name)
            ok += _within_noise(fit, fit.form.name, form)
            X = _points(form, world, table)
            pred_inputs = {k: v for k, v in X.items() if k in fit.form.inputs}
            rows = predict_points(fit, pred_inputs)
            truth = world.true_loss(X["N"], X["D"]) + world.residual(X["N"], X["D"])  # a run's expected loss
            obs = _observe(world, X["N"], X["D"], offset=10_000)
            for k, r, t, o in zip((3, 10), rows, truth, obs):
                lo, hi = r["80%"]
                cover[k].append(lo <= t <= hi)
                cover_obs[k].append(lo <= o <= hi)
                widths.append((hi - lo) / r["loss"])
        counts = {c: chosen.count(c) for c in sorted(set(chosen))}
        out[form] = {"seeds": seeds, "chosen": counts, "generating_or_within_noise": ok / seeds,
                     "cover80_truth_3x": float(np.mean(cover[3])), "cover80_truth_10x": float(np.mean(cover[10])),
                     "cover80_obs_3x": float(np.mean(cover_obs[3])), "cover80_obs_10x": float(np.mean(cover_obs[10])),
                     "median_rel_width80": float(np.median(widths)), "seconds_per_sweep": (time.time() - t0) / seeds}
        print(form, json.dumps(out[form]), flush=True)
    return out


QUICKSTART_LAW = "1.3152 + 115.2/N**0.5622 + 6.229e4/D**0.8417"  # the quickstart's fit (README)
QUICKSTART_SIZES = {2e11: [9e3, 16e3, 25e3, 46e3], 6e11: [16e3, 25e3, 35e3, 74e3, 123e3], 2e12: [35e3, 74e3, 123e3, 220e3]}
EPOCH_T0 = "1.8172 + 482.01/N**0.3478 + 2085.43/D**0.3658"  # Epoch's refit of Chinchilla


def _design(name: str, data: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    if name == "isoflop":
        return _isoflop_design()
    if name == "quickstart":
        rows = [(n, c) for c, ns in QUICKSTART_SIZES.items() for n in ns]
        n, budget = (np.array(v) for v in zip(*rows))
        return n, tokens_for_budget(budget, n), budget
    df = pd.read_csv(data)
    n, c = df["Model Size"].to_numpy(float), df["Training FLOP"].to_numpy(float)
    return n, tokens_for_budget(c, n), np.zeros_like(n)


def false_alarms(seeds: int, data: str) -> dict:
    """Flags on right-form sweeps: the quickstart's 13-run design (its fitted law, seed noise as
    its residuals show: 0.01 nats, no field), the selection benchmark's 40-run IsoFLOP design
    (T1) and Chinchilla's 245-run design (Epoch's refit), both with the benchmark noise."""
    out = {}
    designs = {"quickstart": (QUICKSTART_LAW, NoiseConfig(tier="none", residual_amplitude=0.0, outlier_prob=0.0), 0.01),
               "isoflop": (GENERATING["chinchilla"], NoiseConfig(), 0.0),
               "chinchilla": (EPOCH_T0, NoiseConfig(), 0.0)}
    for name, (law, noise, extra_sd) in designs.items():
        try:
            n, d, budget = _design(name, data)
        except FileNotFoundError:
            print(f"{name}: skipped, no data at {data}", flush=True)
            continue
        holdout, compare, t0 = 0, 0, time.time()
        for seed in range(seeds):
            world = _world(law, seed, noise)
            loss = _observe(world, n, d)
            loss = loss + np.random.default_rng(seed).normal(0.0, extra_sd, len(loss))
            table = pd.DataFrame({"name": [f"r{i}" for i in range(len(n))], "status": "completed", "n_params": n,
                                  "tokens": d, "flops": 6 * n * d, "budget": budget, "eval_loss": loss})
            fit = analyse(table, None, n_boot=0, seed=seed, compare=True)
            holdout += any("predictive intervals" in f for f in fit.flags)
            compare += any("extrapolates better" in f for f in fit.flags)
        out[name] = {"seeds": seeds, "holdout_flag_rate": holdout / seeds, "comparison_flag_rate": compare / seeds,
                     "seconds_per_sweep": (time.time() - t0) / seeds}
        print(name, json.dumps(out[name]), flush=True)
    return out


def speed(data: str) -> dict:
    """The issue's timing goals on this machine."""
    from orchestrator.fitting.bootstrap import bootstrap
    from orchestrator.fitting.law import fit_approach3
    from orchestrator.fitting.forms import FORMS
    from orchestrator.fitting.forms.general import fit_law

    out = {}
    rng = np.random.default_rng(0)
    n = np.geomspace(1e7, 3e9, 40)[None, :].repeat(10, 0).ravel()
    c = np.repeat(np.geomspace(1e17, 1e20, 10), 40)
    d = tokens_for_budget(c, n)
    far = FORMS["farseer"]()
    z = np.array([-0.05, math.log(.28), .3, .1, math.log(410.7), .2, 0.5, math.log(1.69), -0.34])
    loss = far.loss(z, {"N": n, "D": d})[0] * np.exp(rng.normal(0, 0.005, len(n)))
    t = time.time()
    fit = fit_law(far, {"N": n, "D": d}, loss)
    from orchestrator.fitting.bootstrap import resample_counts
    from orchestrator.fitting.forms.general import refit_resamples

    refit_resamples(fit, {"N": n, "D": d}, loss, resample_counts(len(n), 1000, 0))
    out["farseer_400_runs_fit_plus_1000_refits_s"] = time.time() - t
    table = pd.DataFrame({"name": [f"r{i}" for i in range(len(n))], "status": "completed", "n_params": n,
                          "tokens": d, "flops": 6 * n * d, "budget": c, "eval_loss": loss})
    t = time.time()
    analyse(table, 1e21, n_boot=1000, form="auto")
    out["auto_400_runs_full_analysis_s"] = time.time() - t
    try:
        df = pd.read_csv(data)
        cn, cc, cl = (df[k].to_numpy(float) for k in ("Model Size", "Training FLOP", "loss"))
        keep = np.argsort(cl)[:-5]
        cn, cc, cl = cn[keep], cc[keep], cl[keep]
        cd = tokens_for_budget(cc, cn)
        t = time.time()
        a3 = fit_approach3(cn, cd, cl)
        bootstrap(cn, cd, cl, a3, 5.76e23, n_boot=1000)
        out["chinchilla_240_runs_fit_plus_1000_refits_s"] = time.time() - t
    except FileNotFoundError:
        pass
    print(json.dumps(out), flush=True)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("what", choices=("selection", "false-alarms", "speed"))
    ap.add_argument("--seeds", type=int, default=50)
    ap.add_argument("--bootstrap", type=int, default=200, help="resamples per sweep (selection)")
    ap.add_argument("--data", default=str(__import__("pathlib").Path(__file__).resolve().parents[1] / ".." / "shared" /
                                          "data" / "chinchilla_svg_extracted.csv"))
    ap.add_argument("--only", nargs="*", help="selection: only these generating forms")
    args = ap.parse_args(argv)
    if args.only:
        for k in list(GENERATING):
            if k not in args.only:
                GENERATING.pop(k)
    result = {"selection": lambda: selection(args.seeds, args.bootstrap),
              "false-alarms": lambda: false_alarms(args.seeds, args.data), "speed": lambda: speed(args.data)}[args.what]()
    json.dump(result, sys.stdout, indent=1)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
