"""What the runs used, from a sweep's trials or a table of runs, and the sweep's totals.

One frame (:func:`usage_frame`) whatever the source: per run its N, own tokens, wall seconds,
device, devices held (``units``: GPUs, or CPU threads on a CPU), whether it held GPUs, energy and
its source. A sweep's trials carry all of it (workers.run.meter); a table of runs names its
columns with options like ``fit``'s (``--wall-col``, ``--energy-col``, ``--device-col``), and
lacking a device column its runs are taken as one CPU thread each (said in the output).

Totals (:func:`sweep_totals`) count every row, failed trials and a wsd sweep's stem segments
included: all of them were paid for. Energy is the sum of the rows that have one, with the rows
that do not counted, and the devices' part split by source (before PUE): an estimate is never
passed off as a measurement. A table's device column names a GPU when the device table knows it
or the name says so (NVIDIA, GPU, CUDA, ...); any other name is a CPU.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from orchestrator.errors import UserError

__all__ = ["UNRECORDED", "usage_frame", "sweep_totals"]

UNRECORDED = "unrecorded"  # a row written before usage was recorded, or a table without devices
J_PER_KWH = 3.6e6


def _numeric(df: pd.DataFrame, name: str, source: str, option: str | None) -> pd.Series | None:
    if name not in df.columns:
        if option:
            raise UserError(f"{option} {name!r}: no such column in {source} (columns: {', '.join(map(str, df.columns))})")
        return None
    values = pd.to_numeric(df[name], errors="coerce").astype(float)
    if len(values) and values.isna().all() and option:
        raise UserError(f"{option} {name!r} in {source} is not numeric (first value {df[name].iloc[0]!r})")
    return values


def usage_frame(df: pd.DataFrame, source: str, n_col: str | None = None, d_col: str | None = None,
                wall_col: str | None = None, energy_col: str | None = None, device_col: str | None = None) -> pd.DataFrame:
    """The usage of each row of ``df`` (a trials table, or a table of runs with these columns)."""
    n = _numeric(df, n_col or "n_params", source, "--n-col" if n_col else None)
    wall = _numeric(df, wall_col or "wall_s", source, "--wall-col" if wall_col else None)
    if n is None:
        raise UserError(f"{source}: no column 'n_params'; name it with --n-col (columns: {', '.join(map(str, df.columns))})")
    if wall is None:
        raise UserError(f"{source}: no column 'wall_s' (wall seconds per run); name it with --wall-col "
                        f"(columns: {', '.join(map(str, df.columns))})")
    d = _numeric(df, d_col or "tokens", source, "--d-col" if d_col else None)
    if d is None and "flops" in df.columns:
        from workers.flops import tokens_for_budget

        d = pd.Series(tokens_for_budget(pd.to_numeric(df["flops"], errors="coerce").to_numpy(float), n.to_numpy(float)),
                      index=df.index)
    if d is None:
        raise UserError(f"{source}: needs tokens (--d-col) or 'flops' per run to measure throughput "
                        f"(columns: {', '.join(map(str, df.columns))})")
    energy = _numeric(df, energy_col or "energy_j", source, "--energy-col" if energy_col else None)
    if device_col and device_col not in df.columns:
        raise UserError(f"--device-col {device_col!r}: no such column in {source} (columns: {', '.join(map(str, df.columns))})")
    device = df[device_col or "device"].astype("string") if (device_col or "device") in df.columns else None
    device = (device.fillna(UNRECORDED).astype(str) if device is not None
              else pd.Series(UNRECORDED, index=df.index))
    gpus = _numeric(df, "gpu_count", source, None)
    cpus = _numeric(df, "cpus", source, None)
    gpus = gpus.fillna(0.0) if gpus is not None else pd.Series(0.0, index=df.index)
    named_gpu = device.map(_names_a_gpu).astype(bool)
    gpus = gpus.where(~(named_gpu & (gpus <= 0)), 1.0)  # a table naming a GPU without a count: one each
    cpus = cpus.fillna(1.0) if cpus is not None else pd.Series(1.0, index=df.index)
    # A branch of a wsd sweep trained its cooldown only: its own tokens are tokens_per_s x wall,
    # or (rows written before tokens_per_s) its flops_spent / 6N; a table's runs trained all of D.
    own = d
    spent = _numeric(df, "flops_spent", source, None)
    if spent is not None:
        from workers.flops import tokens_for_budget

        own = pd.Series(tokens_for_budget(spent.to_numpy(float), n.to_numpy(float)), index=df.index).where(spent.notna(), d)
    tps = _numeric(df, "tokens_per_s", source, None)
    if tps is not None:
        own = (tps * wall).where(tps.notna(), own)
    units = gpus.where(gpus > 0, cpus)
    # Device-seconds held: a trial's recorded gpu_seconds count each attempt at its own GPUs (one
    # resumed on other ranks); otherwise wall x the devices held.
    held = wall * units
    recorded = _numeric(df, "gpu_seconds", source, None)
    if recorded is not None:
        held = recorded.where((gpus > 0) & (recorded > 0), held)
    out = pd.DataFrame({
        "n": n, "tokens": own, "wall_s": wall, "device": device,
        "gpu": gpus > 0, "units": units, "device_s": held,
        "energy_j": energy if energy is not None else np.nan,
        "energy_source": df["energy_source"].astype("string").fillna("").astype(str) if "energy_source" in df.columns
        else np.where(energy.notna(), "given", "") if energy is not None else "",
        "status": df["status"].astype(str) if "status" in df.columns else "completed",
    })
    return out.reset_index(drop=True)


# A device name that is a GPU's: one in the peak table, or a vendor's or "gpu"/"cuda" in it.
_GPU_WORDS = ("nvidia", "gpu", "cuda", "tesla", "geforce", "quadro", "radeon", "instinct")


def _names_a_gpu(name: str) -> bool:
    from workers.run.devices import lookup

    low = str(name).lower()
    return low not in ("cpu", UNRECORDED, "simulated") and (lookup(low) is not None or any(w in low for w in _GPU_WORDS))


def sweep_totals(usage: pd.DataFrame, settings: dict) -> dict:
    """GPU-hours, CPU core-hours, energy, CO2e and money of every row, with the settings used."""
    wall = usage["wall_s"].fillna(0.0).clip(lower=0)
    held = usage["device_s"].fillna(0.0).clip(lower=0)
    gpu_h = float(held[usage["gpu"]].sum() / 3600)
    cpu_h = float(held[~usage["gpu"]].sum() / 3600)
    has = np.isfinite(usage["energy_j"]) & (usage["energy_j"] > 0)
    pue = float(settings["pue"].value)
    by_source = {str(k) or "unlabelled": float(v) / J_PER_KWH
                 for k, v in usage[has].groupby("energy_source")["energy_j"].sum().items()}
    kwh = sum(by_source.values()) * pue  # the devices' energy, times the facility's overhead
    price_gpu, price_cpu = float(settings["price_per_gpu_hour"].value), float(settings["price_per_cpu_hour"].value)
    return {
        "runs": int(len(usage)), "wall_hours": float(wall.sum() / 3600),
        "gpu_hours": gpu_h, "cpu_core_hours": cpu_h,
        "energy_kwh": kwh if has.any() else None, "device_kwh_by_source": by_source,
        "runs_without_energy": int((~has).sum()),
        "co2e_kg": kwh * float(settings["carbon_g_per_kwh"].value) / 1000 if has.any() else None,
        "cost": gpu_h * price_gpu + cpu_h * price_cpu, "currency": str(settings["currency"].value),
        "devices": {str(k): int(v) for k, v in usage["device"].value_counts().items()},
        "settings": {k: s.to_json() for k, s in settings.items()},
    }

