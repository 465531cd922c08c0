"""The target run's wall time, device-hours, energy, CO2e and money, with 80 % and 95 % intervals.

The run is (N, D) given, or the fit's compute-optimal N_opt at the target compute C with
D = C / 6 N (workers.flops.tokens_for_budget). On K devices of the trials' kind it takes

    wall = 6 N D / (K x rate(N)),    energy = wall x K x power(N) x PUE,

with rate and power the per-device lines of orchestrator.results.cost.model fitted to the trials
on that device. Throughput is assumed to scale linearly with K (data parallelism at full
efficiency: a lower bound on the wall time of a real multi-node run, said in the notes). On a
GPU the trials did not run on, rate = the peak table's bf16 rate (workers.run.devices) x an
*assumed* MFU (cost.assumed_mfu, 95 % within x/÷ 1.6 of it) and power its rated board power:
the projection says so, since nothing was measured there.

Intervals propagate three sources by sampling: N_opt's bootstrap draws (widened to the fit's
interval where its discrepancy term widened it), and the prediction distributions of rate and
power at each drawn N. Rate and power are sampled by Latin hypercube (stratified, so a single
source's quantiles are exact to 1/DRAWS); a fixed N and constant power give the closed-form
t interval of the throughput line (tests/test_cost.py checks it by hand).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from orchestrator.errors import UserError
from orchestrator.fitting import UNDETERMINED_DECADES
from orchestrator.results.cost.model import MIN_RUNS, LogLinear
from orchestrator.results.cost.usage import UNRECORDED
from workers.flops import tokens_for_budget, train_flops

__all__ = ["DRAWS", "MFU_SPREAD", "Target", "interval", "project", "target_from_fit"]

DRAWS = 20_000
LEVELS = {"80%": (10.0, 90.0), "95%": (2.5, 97.5)}
MFU_SPREAD = 1.6  # an assumed MFU's 95 % range: x/÷ this


@dataclass
class Target:
    """The run to project: N (drawn where uncertain) and D, or C with D = C / 6 N."""

    n: float
    tokens: float | None = None
    compute: float | None = None
    n_draws: np.ndarray | None = field(default=None, repr=False)  # None: N is known
    source: str = ""


def target_from_fit(fit) -> Target:
    """N_opt at the fit's target compute, with its bootstrap draws (None without resamples)."""
    t = fit.target
    n, c = float(t["n_opt"]), float(t["compute"])
    if not (math.isfinite(n) and n > 0):
        raise UserError(f"the fit has no compute-optimal N at C = {c:.3g} (its form has no optimum); "
                        "give the run with --at-n and --at-d")
    iv = fit.intervals.get("n_opt") if getattr(fit, "intervals", None) else None
    lo, hi = iv.bounds.get(0.80, (0.0, 0.0)) if iv is not None and iv.n_draws else (0.0, 0.0)
    if lo > 0 and hi / lo > 10 ** UNDETERMINED_DECADES:
        raise UserError(f"the fit does not determine N_opt at C = {c:.3g} (its 80 % interval spans "
                        f"{math.log10(hi / lo):.0f} decades): a projection from it would say nothing; give the run "
                        "with --at-n and --at-d")
    draws = None
    boot = getattr(fit, "bootstrap", None)
    if boot is not None and "n_opt" in boot.draws:
        x = np.log(boot.draws["n_opt"][np.isfinite(boot.draws["n_opt"]) & (boot.draws["n_opt"] > 0)])
        if len(x) >= 10:
            widen = 1.0
            iv = fit.intervals.get("n_opt")
            lo, hi = np.percentile(x, [2.5, 97.5])
            if iv is not None and hi > lo and all(b > 0 for b in iv.bounds[0.95]):
                widen = max(1.0, (math.log(iv.bounds[0.95][1]) - math.log(iv.bounds[0.95][0])) / (hi - lo))
            draws = np.exp(math.log(n) + widen * (x - np.median(x)))
            draws = draws[np.isfinite(draws) & (draws > 0)]
    why = f", {fit.target_source}" if getattr(fit, "target_source", "") else ""
    return Target(n, None, c, draws, f"the fit's N_opt at C = {c:.3g}{why}")


def interval(estimate: float, samples: np.ndarray) -> dict:
    out = {"estimate": float(estimate)}
    for name, q in LEVELS.items():
        out[name] = [float(v) for v in np.percentile(samples, q)]
    return out


def _rows_on(usage: pd.DataFrame, device: str | None) -> tuple[pd.DataFrame, str]:
    ok = (usage["status"] == "completed") & (usage["device"] != "simulated")
    for col in ("wall_s", "tokens", "n", "units", "device_s"):
        ok &= np.isfinite(usage[col]) & (usage[col] > 0)
    ok &= np.isfinite(train_flops(usage["n"], usage["tokens"]) / usage["wall_s"])  # no underflowing wall times
    rows = usage[ok]
    if device is None:
        if not len(rows):
            raise UserError("no completed run with a measured wall time and tokens (simulated trials train "
                            "nothing): nothing to fit throughput to")
        device = rows["device"].value_counts().index[0]  # the device most runs used
        return rows[rows["device"] == device], device
    match = rows[rows["device"].str.lower().str.contains(device.lower(), regex=False)]
    return match, device


def _lhs(rng, k: int) -> np.ndarray:
    """Stratified uniforms: one in each of k equal bins, in random order."""
    return (rng.permutation(k) + 0.5) / k


@np.errstate(over="ignore", divide="ignore")  # a t-distribution's tails with few runs: inf is an honest bound
def project(usage: pd.DataFrame, target: Target, settings: dict, devices: float | None = None,
            device: str | None = None, draws: int = DRAWS, seed: int = 0, kind: str | None = None) -> dict:
    """The projection (module docstring) as JSON-ready data; UserError if it cannot be made.
    ``kind`` ("gpu", "cpu"): what ``devices`` counts, for runs that record no device."""
    rows, device = _rows_on(usage, device)
    rng = np.random.default_rng(seed)
    n_all = target.n_draws if target.n_draws is not None else np.array([target.n])
    n_s = rng.choice(n_all, draws) if len(n_all) > 1 else np.full(draws, target.n)
    notes = []
    if len(rows) >= MIN_RUNS:
        gpu = bool(rows["gpu"].iloc[0])
        if device == UNRECORDED:
            gpu = kind == "gpu"
            notes.append(f"the runs record no device: each is taken as one {'GPU' if gpu else 'CPU thread'} "
                         f"({'--gpus' if gpu else '--gpus K if they ran on GPUs'})")
        rate_y = train_flops(rows["n"], rows["tokens"]) / rows["device_s"]
        rate = LogLinear.fit(rows["n"], rate_y)
        log_rate = rate.draw(np.log(n_s), _lhs(rng, draws))
        log_rate0 = float(rate.mean(math.log(target.n)))
        power, watts_s, watts0 = _power(rows, n_s, target.n, rng, draws)
        basis = "measured"
        k = devices if devices is not None else float(max(1.0, rows["units"].median()) if gpu else rows["units"].median())
        outside = target.n > rows["n"].max() * 1.5 or target.n < rows["n"].min() / 1.5
        if outside and rate.sxx == 0:
            sizes = ", ".join(f"{v:.3g}" for v in sorted(set(rows["n"])))
            raise UserError(f"the runs on {device} are at N = {sizes}: throughput against N needs at least 3 runs "
                            f"over 2 sizes to project N = {target.n:.3g} (expected runs at more sizes, or --at-n "
                            "near theirs)")
        if target.n > rows["n"].max() * 1.5:
            notes.append(f"N = {target.n:.3g} is {target.n / rows['n'].max():.0f}x the largest trial: the throughput "
                         "line is extrapolated (its interval widens with the distance)")
        elif target.n < rows["n"].min() / 1.5:
            notes.append(f"N = {target.n:.3g} is below the smallest trial's {rows['n'].min():.3g}: the throughput "
                         "line is extrapolated downwards")
        if power is None and watts_s is not None:
            notes.append("power from a single run with energy: the energy interval carries the wall time's spread only")
        model = {"rate": rate.to_json(), "power": power.to_json() if power is not None else None}
    elif len(rows):
        raise UserError(f"{len(rows)} run on {device}: at least {MIN_RUNS} are needed to fit throughput against N")
    else:
        gpu, log_rate, log_rate0, watts_s, watts0, k, model = _assumed(device, settings, n_s, rng, draws, devices, usage)
        basis = "assumed"
        notes.append(f"no trial ran on {device}: its bf16 peak from the device table x an assumed MFU of "
                     f"{float(settings['assumed_mfu'].value):g} ({settings['assumed_mfu'].source}; 95 % within "
                     f"x/÷{MFU_SPREAD}) and its rated board power, not a measurement")
    if k is None or not k > 0:
        raise UserError("--gpus/--cpus: expected a positive number of devices")
    if k != 1:
        notes.append(f"throughput taken as {k:g}x one device's (linear scaling: a lower bound on the wall time)")
    d_s = tokens_for_budget(target.compute, n_s) if target.tokens is None else np.full(draws, float(target.tokens))
    d0 = tokens_for_budget(target.compute, target.n) if target.tokens is None else float(target.tokens)
    wall_h = train_flops(n_s, d_s) / (k * np.exp(log_rate)) / 3600
    wall0 = train_flops(target.n, d0) / (k * math.exp(log_rate0)) / 3600
    pue, carbon = float(settings["pue"].value), float(settings["carbon_g_per_kwh"].value)
    price = float(settings["price_per_gpu_hour" if gpu else "price_per_cpu_hour"].value)
    out = {
        "n": interval(target.n, n_s), "d": interval(d0, d_s),
        "compute": float(train_flops(target.n, d0)), "target": target.source,
        "device": device, "kind": "gpu" if gpu else "cpu", "devices": float(k), "basis": basis,
        "throughput_runs": int(len(rows)), "model": model,
        "flops_per_s_per_device": interval(math.exp(log_rate0), np.exp(log_rate)),
        "wall_hours": interval(wall0, wall_h),
        "gpu_hours": interval(wall0 * k, wall_h * k) if gpu else interval(0.0, np.zeros(1)),
        "cpu_core_hours": interval(0.0, np.zeros(1)) if gpu else interval(wall0 * k, wall_h * k),
        "currency": str(settings["currency"].value), "notes": notes,
    }
    sources = rows.loc[rows["energy_j"].notna() & (rows["energy_j"] > 0), "energy_source"].value_counts().to_dict()
    out["energy_sources"] = {str(k): int(v) for k, v in sources.items()}
    if basis == "measured" and sources and set(sources) <= {"estimated", "given", ""}:
        out["notes"].append("the runs' energy is estimated (rated power x utilisation) or given, not read from a "
                            "counter: so is the projected energy")
    if watts_s is None:
        out["notes"].append("no run on this device has an energy figure: energy and CO2e unknown")
        out.update({"energy_kwh": None, "co2e_kg": None})
    else:
        kwh, kwh0 = wall_h * k * watts_s * pue / 1000, wall0 * k * watts0 * pue / 1000
        out.update({"energy_kwh": interval(kwh0, kwh), "co2e_kg": interval(kwh0 * carbon / 1000, kwh * carbon / 1000),
                    "watts_per_device": interval(watts0, watts_s)})
    out["cost"] = interval(wall0 * k * price, wall_h * k * price)
    return out


def _power(rows: pd.DataFrame, n_s, n0, rng, draws):
    """(the power line, W per device at each drawn N, at the estimate), from the rows with energy."""
    has = rows["energy_j"].notna() & (rows["energy_j"] > 0)
    if not has.any():
        return None, None, None
    r = rows[has]
    watts = r["energy_j"] / r["device_s"]
    if len(r) < MIN_RUNS:
        w = float(watts.iloc[0])
        return None, np.full(draws, w), w
    power = LogLinear.fit(r["n"], watts)
    return power, np.exp(power.draw(np.log(n_s), _lhs(rng, draws))), float(math.exp(power.mean(math.log(n0))))


def _assumed(device: str, settings: dict, n_s, rng, draws, devices, usage):
    from workers.run.devices import DEVICES, lookup

    known = lookup(device)
    if known is None:
        ran = ", ".join(sorted(set(usage["device"]))) or "none"
        raise UserError(f"--device {device!r}: no trial ran on it (they ran on {ran}) and the device table has no "
                        f"such GPU (known: {', '.join(p for p, _, _ in DEVICES)})")
    peak, rated = known
    mfu = float(settings["assumed_mfu"].value)
    from scipy import stats

    z = stats.norm.ppf(_lhs(rng, draws))
    log_rate = math.log(peak * mfu) + z * math.log(MFU_SPREAD) / 1.96
    k = devices if devices is not None else 1.0
    model = {"peak_flops": peak, "assumed_mfu": mfu, "rated_watts": rated}
    return True, log_rate, math.log(peak * mfu), np.full(draws, rated), rated, k, model
