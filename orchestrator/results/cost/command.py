"""``scalesweep cost RESULTS_OR_FILE``: what the sweep cost, and what the target run will.

The target is ``--at-n N --at-d D`` (or ``--at-n N --compute C``: D = C / 6N), else the fit's
N_opt at ``--compute`` (default the sweep's target), fitted as ``scalesweep fit`` fits (the runs'
form, ``--bootstrap`` resamples) so that its N_opt interval carries into the projection. On a
table of runs the columns are named as for ``fit`` plus ``--wall-col`` (seconds per run) and,
where present, ``--energy-col`` (joules) and ``--device-col``. The command is registered by
orchestrator.cli (``add_parser``); errors are one line, exit status 2.
"""

from __future__ import annotations

import json
import math

__all__ = ["add_parser", "cmd_cost", "projection_lines", "totals_lines"]

OVERRIDES = {"carbon": ("carbon_g_per_kwh", "--carbon"), "pue": ("pue", "--pue"),
             "price": ("price_per_gpu_hour", "--price"), "cpu_price": ("price_per_cpu_hour", "--cpu-price"),
             "mfu": ("assumed_mfu", "--mfu")}


def add_parser(sub, compute_type, count_type) -> None:
    p = sub.add_parser("cost", help="GPU-hours, energy, CO2e and money: the sweep's, and the target run's projected",
                       description="Totals of what the runs used, and a projection of the recommended run (the fit's "
                                   "N_opt at the target compute, or --at-n/--at-d) on K devices, from a throughput "
                                   "model fitted to the runs on that device, with 80 % and 95 % intervals.")
    p.add_argument("results", metavar="RESULTS_OR_FILE",
                   help="sweep results directory (results/<sweep>) or a .csv/.parquet file of runs")
    p.add_argument("--compute", type=compute_type, help="target compute in FLOPs (default: the sweep's)")
    p.add_argument("--at-n", type=compute_type, metavar="N", help="project this parameter count instead of N_opt")
    p.add_argument("--at-d", type=compute_type, metavar="D", help="tokens of the --at-n run (or give --compute)")
    p.add_argument("--gpus", type=_positive, metavar="K", help="GPUs the target runs on (default: the trials' per-trial count, at least 1)")
    p.add_argument("--cpus", type=_positive, metavar="K", help="CPU threads the target runs on, where the runs used CPUs")
    p.add_argument("--device", metavar="NAME",
                   help="device of the target (default: the one most runs used); a GPU no run used is projected from "
                        "the peak table and an assumed MFU")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    for key, text in (("n", "parameter counts N (default: n_params)"), ("d", "training tokens D (default: tokens)"),
                      ("c", "training FLOPs C (default: flops)"), ("loss", "final losses, for the fit (default: eval_loss)"),
                      ("wall", "wall seconds per run (default: wall_s)"), ("energy", "joules per run (default: energy_j)"),
                      ("device", "each run's device name (default: device; none: one CPU thread each)")):
        p.add_argument(f"--{key}-col", dest=f"{key}_col", metavar="COLUMN", help=f"column of {text}")
    p.add_argument("--carbon", type=_non_negative, metavar="G", help="grid carbon intensity, g CO2e per kWh")
    p.add_argument("--pue", type=_positive, help="data-centre power usage effectiveness (>= 1)")
    p.add_argument("--price", type=_non_negative, metavar="X", help="price per GPU-hour")
    p.add_argument("--cpu-price", type=_non_negative, metavar="X", help="price per CPU thread-hour")
    p.add_argument("--mfu", type=_positive, metavar="M", help="MFU assumed on a --device no run used (0-1)")
    p.add_argument("--bootstrap", type=count_type, default=1000, metavar="B",
                   help="bootstrap resamples of the fit, for N_opt's interval (default 1000; 0: N_opt fixed)")
    p.add_argument("--seed", type=count_type, default=0, help="seed of the bootstrap and the projection (default 0)")
    p.set_defaults(fn=cmd_cost)


def _real(zero_ok: bool):
    """An argparse type: a finite number > 0 (>= 0 with ``zero_ok``)."""
    import argparse

    def parse(s: str) -> float:
        try:
            v = float(s)
        except ValueError:
            v = math.nan
        if not (math.isfinite(v) and (v >= 0 if zero_ok else v > 0)):
            raise argparse.ArgumentTypeError(f"expected a finite number {'>=' if zero_ok else '>'} 0, got {s!r}")
        return v

    return parse


_positive, _non_negative = _real(False), _real(True)


def _settings(args, plan: dict) -> dict:
    from orchestrator.errors import UserError
    from orchestrator.spec.cost import CostSpec, provenance

    overrides = {name: (getattr(args, key), option) for key, (name, option) in OVERRIDES.items()}
    given = {name: v for name, (v, _) in overrides.items() if v is not None}
    try:
        CostSpec.model_validate(given)
    except Exception as e:  # pydantic's message names the field: say it as the option
        err = e.errors()[0] if hasattr(e, "errors") else {"loc": ("?",), "msg": str(e)}
        option = next(o for n, (_, o) in overrides.items() if n == err["loc"][0])
        raise UserError(f"{option}: {err['msg']}") from None
    return provenance(plan.get("cost"), overrides)


def _read(args):
    """(the runs' raw table, plan.json's record or {}, the source's name)."""
    from orchestrator.results import open_results, plan_record
    from orchestrator.results.runs import _is_file, _read_file

    if _is_file(args.results, "runs, or a results directory"):
        return _read_file(args.results), {}, args.results
    store = open_results(args.results)
    return store.read_table("trials").to_pandas(), plan_record(store), args.results


def _target(args):
    from orchestrator.errors import UserError
    from orchestrator.results.cost.projection import Target, target_from_fit

    if args.at_d is not None and args.at_n is None:
        raise UserError("--at-d: give the run's parameter count with --at-n too")
    if args.at_n is not None:
        if args.at_d is None and args.compute is None:
            raise UserError("--at-n: give its tokens with --at-d, or its compute with --compute (D = C / 6N)")
        if args.at_d is not None and args.compute is not None:
            raise UserError("--compute and --at-d both fix D for --at-n: give one of them")
        how = f"--at-n {args.at_n:.4g} --at-d {args.at_d:.4g}" if args.at_d is not None \
            else f"--at-n {args.at_n:.4g} --compute {args.compute:.3g}"
        return Target(args.at_n, args.at_d, args.compute, None, how)
    return target_from_fit(_fit(args))


def _fit(args):
    from orchestrator.fitting.hparams.tuned import analyse_trials
    from orchestrator.fitting.variants import fit_variants
    from orchestrator.results.runs import ColumnMap, load_runs

    from orchestrator.fitting.forms import resolve_form

    runs = load_runs(args.results, ColumnMap(n=args.n_col, d=args.d_col, c=args.c_col, loss=args.loss_col))
    name = runs.form or "chinchilla"  # the sweep's fit.form, as `scalesweep fit` takes it
    form = "auto" if name == "auto" else resolve_form(name, runs.form_params)
    fit, _ = fit_variants(runs.table, args.compute or runs.target_compute, fit_one=analyse_trials,
                          n_boot=args.bootstrap, seed=args.seed, isoflop=runs.isoflop, form=form,
                          objective=runs.objective)
    return fit


def cmd_cost(args) -> int:
    from orchestrator.errors import FitError, UserError
    from orchestrator.results.cost.projection import project
    from orchestrator.results.cost.usage import sweep_totals, usage_frame

    if args.gpus is not None and args.cpus is not None:
        raise UserError("--gpus and --cpus: give one device count")
    raw, plan, source = _read(args)
    usage = usage_frame(raw, source, args.n_col, args.d_col, args.wall_col, args.energy_col, args.device_col)
    settings = _settings(args, plan)
    totals = sweep_totals(usage, settings)
    devices = args.gpus if args.gpus is not None else args.cpus
    kind = "gpu" if args.gpus is not None else "cpu" if args.cpus is not None else None
    asked = any(v is not None for v in (args.at_n, args.at_d, args.compute, args.device, devices))
    try:
        proj, why = project(usage, _target(args), settings, devices, args.device, seed=args.seed, kind=kind), ""
    except (UserError, FitError) as e:
        if asked:  # a projection the user asked for: its error is the answer
            raise
        proj, why = None, str(e)  # the sweep's totals stand without one (a simulated sweep, too few runs)
    if proj is not None and proj["kind"] == "cpu" and args.gpus is not None:
        raise UserError(f"--gpus: the runs on {proj['device']} used CPUs; name a GPU with --device (projected from "
                        "the peak table) or give --cpus")
    if proj is not None and proj["kind"] == "gpu" and args.cpus is not None:
        raise UserError(f"--cpus: {proj['device']} is a GPU; give --gpus")
    if args.json:
        print(json.dumps(finite({"sweep": totals, "projection": proj, "unavailable": why or None}), indent=1,
                         default=float))
        return 0
    print("\n".join(totals_lines(totals) + projection_lines(proj, why)))
    return 0


def finite(obj):
    """``obj`` with every non-finite float as None: JSON has no NaN or Infinity."""
    if isinstance(obj, dict):
        return {k: finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def _num(x: float | None) -> str:
    return "n/a" if x is None or not math.isfinite(x) else f"{x:.3g}"


def _hours(h: float | None) -> str:
    from orchestrator.report.text import duration

    return "n/a" if h is None or not math.isfinite(h) else duration(h * 3600)


SHOWN = {"carbon_g_per_kwh": "{v:g} g CO2e/kWh", "pue": "PUE {v:g}", "price_per_gpu_hour": "{v:g} {c}/GPU-hour",
         "price_per_cpu_hour": "{v:g} {c}/CPU thread-hour"}


def totals_lines(t: dict) -> list[str]:
    """The sweep's totals, and where each setting behind them came from."""
    s = t["settings"]
    pue = float(t["settings"]["pue"]["value"])
    energy = "energy unknown (no run has a figure)" if t["energy_kwh"] is None else (
        f"{_num(t['energy_kwh'])} kWh (devices: " + ", ".join(f"{src} {_num(v)}" for src, v in t["device_kwh_by_source"].items())
        + (f"; x PUE {pue:g}" if pue != 1 else "")
        + (f"; {t['runs_without_energy']} runs without a figure" if t["runs_without_energy"] else "") + ")")
    co2 = "" if t["co2e_kg"] is None else f", {_num(t['co2e_kg'])} kg CO2e"
    return [f"Sweep cost: {t['runs']} runs, {_num(t['gpu_hours'])} GPU-hours, {_num(t['cpu_core_hours'])} CPU thread-hours; "
            f"{energy}{co2}; {_num(t['cost'])} {t['currency']}",
            "  from " + "; ".join(f"{fmt.format(v=s[k]['value'], c=t['currency'])} ({s[k]['source']})"
                                  for k, fmt in SHOWN.items())]


def _iv(d: dict | None, fmt=_num) -> str:
    if d is None:
        return "unknown"
    return (f"{fmt(d['estimate']):>9}   80% [{fmt(d['80%'][0])}, {fmt(d['80%'][1])}]   "
            f"95% [{fmt(d['95%'][0])}, {fmt(d['95%'][1])}]")


def projection_lines(p: dict | None, why: str = "") -> list[str]:
    from orchestrator.report.text import si

    if p is None:
        return [f"Projection: not made ({why})"] if why else []
    hours = "GPU-hours" if p["kind"] == "gpu" else "CPU thread-hours"
    runs = f"{p['throughput_runs']} runs" if p["basis"] == "measured" else "assumed"
    lines = [f"Projection: N = {si(p['n']['estimate'])}, D = {si(p['d']['estimate'])} ({p['target']}) on "
             f"{p['devices']:g} x {p['device']} (throughput: {runs})",
             f"  wall time      {_iv(p['wall_hours'], _hours)}",
             f"  {hours:<14} {_iv(p['gpu_hours' if p['kind'] == 'gpu' else 'cpu_core_hours'])}",
             f"  energy (kWh)   {_iv(p['energy_kwh'])}",
             f"  CO2e (kg)      {_iv(p['co2e_kg'])}",
             f"  cost ({p['currency']})    {_iv(p['cost'])}"]
    return lines + [f"  note: {n}" for n in p["notes"]]
