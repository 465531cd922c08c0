"""``scalesweep status RESULTS``: what a sweep has run, spent and found so far, and the tasks its
finished trials lack (evaluation settings are not in trial ids, so a trial finished before a task
was added keeps the tasks it was evaluated on)."""

from __future__ import annotations

import json

__all__ = ["cmd_status"]


def cmd_status(args) -> int:
    from orchestrator.report.text import duration, si
    from orchestrator.results import open_results
    from orchestrator.results import plan_record
    from workers.store import TrialStatus

    from orchestrator.results import NOT_IN_SPEC, label_variants, point_rows, spent_flops
    from workers.config import BASELINE

    store = open_results(args.results)
    plan = plan_record(store)
    every = label_variants(store.read_table("trials").to_pandas(), plan, keep_removed=True)
    # Rows of variants the spec no longer has are not the sweep's (never fitted): counted apart.
    removed = every["variant"].str.endswith(NOT_IN_SPEC)
    gone = point_rows(every[removed])["variant"].value_counts().to_dict()
    every = every[~removed]
    trials = point_rows(every)  # stem segments of wsd sweeps count as FLOPs, not as trials
    variants = sorted(set(trials["variant"]), key=lambda v: (v != BASELINE, v))
    planned, tuned = plan.get("trials"), plan.get("tuned") or []
    counts = trials["status"].value_counts().to_dict()
    finished = trials[trials["status"].isin([st.value for st in TrialStatus if st.is_finished()])]
    # A tuned sweep plans points, each searched by several trials: a point is unfinished while
    # none of its trials has finished (`run` resumes its search).
    key = "point_id" if tuned else "trial_id"
    done_ids = set(finished[key])
    total = len(planned) if planned is not None else len(trials)
    pending = sum(1 for t in planned if t.get(key) not in done_ids) if planned is not None else 0
    head = f"{total} trials planned" if planned else "adaptive planner"
    if tuned:
        head = (f"{total if planned else trials['point_id'].nunique()} design points, {' and '.join(tuned)} searched "
                f"per point in {len(trials)} trials")
    spent, nominal = spent_flops(every), float(trials["flops"].sum())
    stems = len(every) - len(trials)
    tasks, lacking = _task_coverage(store, finished, plan)
    from orchestrator.results.cost import sweep_cost

    cost = sweep_cost(every, plan, args.results)
    if args.json:
        counts = {str(k): int(v) for k, v in counts.items()}
        print(json.dumps({"results": args.results, "trials": len(trials), "stem_segments": stems, "status": counts,
                          "pending": pending, "flops_spent": spent, "flops_points": nominal,
                          "saving": 1 - spent / nominal if nominal > 0 else 0.0,
                          "wall_s": float(every["wall_s"].sum()),
                          "variants": {str(v): {str(k): int(n) for k, n in g["status"].value_counts().items()}
                                       for v, g in trials.groupby("variant", sort=False)},
                          "tasks": {"planned": tasks, "lacking": lacking}, "cost": cost,
                          "not_in_spec": {str(v): int(n) for v, n in gone.items()}}, indent=1))
        return 0
    print(f"{args.results}: {head}; " + ", ".join(f"{v} {k}" for k, v in sorted(counts.items()))
          + (f"; {pending} {'points without a finished trial' if tuned else 'not finished'}" if planned else ""))
    reuse = (f" against the points' {si(nominal)} (6ND of each; {1 - spent / nominal:.0%} saved by {stems} stem "
             f"segments shared by their branches)" if stems and nominal > 0 else "")
    print(f"FLOPs spent: {si(spent)}{reuse}; wall time in trials: {duration(every['wall_s'].sum())}")
    from orchestrator.results.cost.command import totals_lines

    print("\n".join(totals_lines(cost)))
    if gone:
        print("Not fitted, their variants not in the spec now: "
              + ", ".join(f"{n} trials of {v.removesuffix(NOT_IN_SPEC)!r}" for v, n in gone.items()))
    ok = trials[trials["status"] == TrialStatus.COMPLETED.value]
    for variant in variants:
        mine = ok[ok["variant"] == variant]
        if not len(mine):
            continue
        best = mine.sort_values("eval_loss").groupby("budget", sort=True).head(1).sort_values("budget")
        print("Best held-out loss per budget" + (f", {variant}:" if len(variants) > 1 else ":"))
        for _, r in best.iterrows():
            hp = f" lr={r['lr']:.3g} batch={r['batch_tokens']}" if tuned else ""
            print(f"  C={r['budget']:.3g}: {r['eval_loss']:.4f} at N={si(r['n_params'])} D={si(r['tokens'])}{hp}")
    if tasks:
        print(f"Tasks: {', '.join(tasks)}; {len(finished) - len(lacking)} of {len(finished)} finished trials "
              "evaluated on all of them")
        names = dict(zip(finished["trial_id"], finished["name"]))
        for tid, miss in list(lacking.items())[:20]:
            print(f"  {tid} {names.get(tid, '')} lacks {', '.join(miss)}")
        if len(lacking) > 20:
            print(f"  ... and {len(lacking) - 20} more (scalesweep status --json lists every one)")
    for _, r in trials[trials["status"] == TrialStatus.FAILED.value].iterrows():
        print(f"  failed {r['trial_id']} {r['name']}: {str(r['error']).splitlines()[0] if r['error'] else ''}")
    return 0


def _task_coverage(store, finished, plan: dict) -> tuple[list[str], dict[str, list[str]]]:
    """(the spec's tasks, {trial_id: tasks it lacks} for finished trials): evaluation settings are not
    in trial ids, so a trial finished before a task was added keeps the tasks it was evaluated on."""
    tasks = [str(t) for t in plan.get("eval_tasks") or []]
    if not tasks or not len(finished):
        return tasks, {}
    ev = store.read_table("evals").select(["trial_id", "task"]).to_pandas()
    have = ev.groupby("trial_id")["task"].agg(set).to_dict() if len(ev) else {}
    lacking = {}
    for tid in finished["trial_id"]:
        miss = [t for t in tasks if t not in have.get(tid, set())]
        if miss:
            lacking[str(tid)] = miss
    return tasks, lacking
