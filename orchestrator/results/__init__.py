"""Reading a sweep's results: its Parquet tables as pandas DataFrames, labelled as the spec names them now.

``RESULTS`` is a sweep directory (``results/<sweep>``) or a URI pyarrow understands. Files are
read through pyarrow's filesystems, so local and object storage share one code path. SQL over
the same tables, read-only and limited in time and memory, is :mod:`orchestrator.results.sql`.
"""

from __future__ import annotations

import json
import logging

import pandas as pd
import pyarrow as pa

from orchestrator.errors import UserError
from workers.config import BASELINE
from workers.store import ResultStore

__all__ = ["account_reuse", "label_variants", "open_results", "load_trials", "load_steps", "load_evals", "point_rows", "spent_flops",
           "NOT_IN_SPEC", "plan_record", "read_labelled", "read_trials"]


log = logging.getLogger(__name__)

# The label of a row whose variant the spec no longer has, after the name it was written with:
# variant names cannot hold spaces (orchestrator.spec.NAME_RE), so it is never a variant's name.
NOT_IN_SPEC = " (not in spec)"


def open_results(path: str) -> ResultStore:
    """The store at ``path``; UserError if it holds no sweep results."""
    try:
        store = ResultStore(path)
    except Exception as e:  # invalid URI, unknown scheme, missing credentials
        raise UserError(f"{path}: cannot open results ({e})") from None
    if not store.exists():
        raise UserError(f"{path}: results directory not found (expected results/<sweep name>, written by 'scalesweep run')")
    if not store.list_files("trials"):
        raise UserError(f"{path}: no trial results yet (expected {path}/trials/*.parquet; has the sweep run?)")
    return store


def plan_record(store: ResultStore) -> dict:
    """The sweep's plan.json (orchestrator.sweep writes it): {} when there is none."""
    try:
        with store.fs.open_input_stream(f"{store.root}/plan.json") as f:
            plan = json.loads(f.read())
        return plan if isinstance(plan, dict) else {}
    except (FileNotFoundError, OSError, ValueError):
        return {}


def load_trials(path: str) -> pd.DataFrame:
    """One row per trial (see workers.store.TRIALS_SCHEMA), variants named as :func:`read_trials` names them."""
    return read_trials(open_results(path)).to_pandas()


def read_trials(store: ResultStore, plan: dict | None = None) -> pa.Table:
    """The trials table as every reader shows it (load_trials, query, status, fit): each row's
    ``variant`` as the sweep's plan (``plan``, default its plan.json) names it now, rows of
    variants no longer in the spec kept and labelled so (:func:`label_variants`)."""
    table = store.read_table("trials")
    plan = plan_record(store) if plan is None else plan
    labels, _ = _variant_labels(table.select(["variant", "variant_id", "point_id"]).to_pandas(), plan)
    return table.set_column(table.schema.get_field_index("variant"), "variant",
                            pa.array(labels.to_numpy(dtype=object), pa.string()))


def point_rows(trials: pd.DataFrame) -> pd.DataFrame:
    """The design points' rows: stem segments (wsd stable runs, orchestrator.running.reuse) are
    not points of the law and are never fitted. Rows written before roles existed are points."""
    if "role" not in trials:
        return trials
    return trials[trials["role"].astype("string").fillna("point") != "stem"]


def read_labelled(store: ResultStore, table: str) -> pa.Table:
    """``table`` ("trials", "steps" or "evals") of ``store`` as readers show it: the trials
    through :func:`read_trials`, the steps and evals (which name no variant) as stored."""
    return read_trials(store) if table == "trials" else store.read_table(table)


def label_variants(trials: pd.DataFrame, plan: dict, keep_removed: bool = False) -> pd.DataFrame:
    """``trials`` with its ``variant`` column as the sweep's plan (plan.json) names each row's
    variant now, the rows of variants the spec no longer has left out (with a warning naming
    them) unless ``keep_removed``: what is fitted and compared is the spec's variants.

    A row records its variant's identity (``variant_id``: the hash of the settings it changes,
    orchestrator.planning.trials.variant_id), and the plan names the identities of the spec's
    variants (its "variants"): a renamed variant keeps its finished trials (ids hash its
    settings, not its name) and all their rows show the new name, an adaptive sweep's too. A row
    whose identity the spec does not have (the variant removed, or its settings changed under its
    name) is another variant's: labelled '<name it was written with> (not in spec)'. Rows written
    before ``variant_id`` existed take the variant the plan gives their point (a static sweep's),
    else the name they were written with (before variants existed: the baseline)."""
    trials = trials.copy()
    labels, removed = _variant_labels(trials, plan)
    trials["variant"] = labels
    if keep_removed or not removed.any():
        return trials
    for label, n in trials.loc[removed, "variant"].value_counts().items():
        log.warning("%d rows of variant %r are not fitted: its settings are not in the spec now (status, query and "
                    "load_trials show them as %r)", n, label.removesuffix(NOT_IN_SPEC), label)
    return trials[~removed]


def _variant_labels(trials: pd.DataFrame, plan: dict) -> tuple[pd.Series, pd.Series]:
    """(each row's variant as :func:`label_variants` names it, whether the spec no longer has it)."""
    written = (trials["variant"].astype(object) if "variant" in trials else pd.Series(None, index=trials.index,
                                                                                      dtype=object))
    written = written.where(written.map(lambda v: isinstance(v, str)), BASELINE)
    labels = written
    named = {t.get("point_id"): t.get("variant") for t in plan.get("trials") or [] if isinstance(t, dict)}
    named = {k: v for k, v in named.items() if isinstance(k, str) and isinstance(v, str)}
    if named and "point_id" in trials:
        labels = trials["point_id"].map(named).astype(object).where(lambda v: v.notna(), labels)
    removed = pd.Series(False, index=trials.index)
    names = {v["id"]: v["name"] for v in plan.get("variants") or []
             if isinstance(v, dict) and isinstance(v.get("id"), str) and isinstance(v.get("name"), str)}
    if names and "variant_id" in trials:
        ids = trials["variant_id"].astype(object)
        known = ids.map(lambda v: isinstance(v, str) and v != "").astype(bool)
        now = ids.map(names).astype(object)
        removed = known & now.isna()
        labels = now.where(known & now.notna(), labels).where(~removed, written + NOT_IN_SPEC)
    return labels.astype(str), removed.astype(bool)


def spent_flops(trials: pd.DataFrame) -> float:
    """Training FLOPs the rows computed: ``flops_spent`` (a branch: its cooldown; a stem segment:
    its stretch), else the row's 6 N D (rows written before flops_spent existed)."""
    flops = pd.to_numeric(trials["flops"], errors="coerce")
    if "flops_spent" in trials:
        flops = pd.to_numeric(trials["flops_spent"], errors="coerce").fillna(flops)
    return float(flops.fillna(0).sum())


def account_reuse(fit, points: pd.DataFrame, stems: pd.DataFrame | None) -> str:
    """With a wsd sweep's stem segments: count their FLOPs into ``fit`` (an
    orchestrator.fitting.analysis.SweepFit, or None) and its report's FLOPs-over-time, and return
    the line that says what reuse saved; "" for a sweep without stems. Only the stems of
    ``points`` count (a results directory may hold other sweeps' rows)."""
    if stems is None or not len(stems) or "parent_id" not in points:
        return ""
    stems = stems[stems["parent_id"].isin(set(points["parent_id"]))]
    spent, nominal = spent_flops(points) + spent_flops(stems), float(pd.to_numeric(points["flops"]).sum())
    if fit is not None:
        fit.flops_spent = spent
        rows = pd.concat([points, stems])
        fit.spent_rows = pd.DataFrame({"finished_at": rows["finished_at"], "wall_s": rows["wall_s"],
                                       "flops": rows["flops_spent"].fillna(rows["flops"])})
    if nominal <= 0:
        return ""
    return (f"Run reuse: {stems['parent_id'].nunique()} stems in {len(stems)} segments; "
            f"{spent:.3g} FLOPs computed against the points' {nominal:.3g} ({1 - spent / nominal:.0%} saved)")


def load_steps(path: str) -> pd.DataFrame:
    """Per-step metrics of every trial (see workers.store.STEPS_SCHEMA)."""
    return open_results(path).read_table("steps").to_pandas()


def load_evals(path: str) -> pd.DataFrame:
    """Task evaluations of every trial, one row per (trial, step, task) (workers.store.EVALS_SCHEMA)."""
    return open_results(path).read_table("evals").to_pandas()
