"""Run reuse: the wsd schedule, stem and branch ids, the shared ladder, and sweeps whose points
branch off stems (real PyTorch training and real Parquet in-process; on Ray at the end)."""

from __future__ import annotations

import json
import math
import os

import pytest
import yaml

from conftest import ROOT, tiny_spec_dict
from orchestrator.cli import main
from orchestrator.errors import UserError
from orchestrator.planning.trials import TrialFactory, plan_trials, shared_ladder
from orchestrator.running.executor import InlineExecutor
from orchestrator.spec import SweepSpec, load_spec, parse_spec
from orchestrator.sweep import run_sweep
from workers.config import TrainConfig
from workers.flops import train_flops
from workers.schedule import cooldown_start, lr_at, warmup_steps
from workers.simulated.trainer import STABLE_GAP, schedule_factor
from workers.store import ResultStore

WSD = {"schedule": "wsd"}


# -- the schedule ---------------------------------------------------------------------------
def test_wsd_before_the_cooldown_does_not_depend_on_d():
    cfg = TrainConfig(lr=1e-3, schedule="wsd", min_lr_ratio=0.0)
    n, bt = 5000, 256
    short, long = 100, 1000
    start = cooldown_start(short, cfg)
    assert start == 80 and cooldown_start(long, cfg) == 800
    # The same learning rate at every step before the short run's cooldown, whatever D is.
    for s in range(start):
        assert lr_at(s, short, cfg, n, bt) == lr_at(s, long, cfg, n, bt) == lr_at(s, None, cfg, n, bt)
    w = warmup_steps(cfg, None, n, bt)
    assert w == round(0.05 * 20 * n / bt) and lr_at(w - 1, long, cfg, n, bt) == pytest.approx(1e-3)
    assert lr_at(0, long, cfg, n, bt) == pytest.approx(1e-3 / w)
    # The cooldown ends at min_lr exactly, in the 1-sqrt shape.
    assert lr_at(long - 1, long, cfg, n, bt) == pytest.approx(0.0, abs=1e-15)
    half = 800 + 100 - 1  # half-way through the 200 cooldown steps
    assert lr_at(half, long, cfg, n, bt) == pytest.approx(1e-3 * (1 - math.sqrt(0.5)))
    lin = cfg.model_copy(update={"cooldown": cfg.cooldown.model_copy(update={"shape": "linear"})})
    assert lr_at(half, long, lin, n, bt) == pytest.approx(0.5e-3)


def test_cosine_schedule_unchanged():
    cfg = TrainConfig(lr=1e-3)
    assert lr_at(0, 100, cfg) == pytest.approx(1e-3 / 5)
    assert lr_at(99, 100, cfg) == pytest.approx(1e-4)


@pytest.mark.parametrize("train, message", [
    ({"schedule": "wsd", "cooldown": {"fraction": 1.0}}, "train.cooldown.fraction"),
    ({"schedule": "wsd", "cooldown": {"fraction": 0}}, "train.cooldown.fraction"),
    ({"reuse": True}, "reuse applies to schedule: wsd"),
    ({"cooldown": {"fraction": 0.2}}, "cooldown applies to schedule: wsd"),
    ({"keep_stems": True}, "keep_stems applies to schedule: wsd"),
    ({"schedule": "wsd", "cooldown": {"shape": "cubic"}}, "train.cooldown.shape"),
])
def test_bad_schedule_settings_are_one_line(tmp_path, train, message):
    d = tiny_spec_dict(str(tmp_path / "r"))
    d["train"] = {**d["train"], **train}
    with pytest.raises(UserError) as e:
        parse_spec(d)
    assert message in str(e.value) and "\n" not in str(e.value)


# -- ids ------------------------------------------------------------------------------------
def _grid(tmp_path, **train):
    d = tiny_spec_dict(str(tmp_path / "r"), name="g", sweep={"kind": "grid", "model_sizes": [4e3],
                                                          "tokens": [8192, 16384, 32768]})
    d["train"] = {**d["train"], **train}
    spec = parse_spec(d)
    return spec, plan_trials(spec, TrialFactory(spec))


def test_wsd_ids_share_the_stem_and_keep_cosine_ids(tmp_path):
    _, cosine = _grid(tmp_path)
    _, wsd = _grid(tmp_path, **WSD)
    _, whole = _grid(tmp_path, schedule="wsd", reuse=False)
    _, short = _grid(tmp_path, schedule="wsd", cooldown={"fraction": 0.1})
    assert all(t.stem_id == "" and t.start_step == 0 for t in cosine)
    assert len({t.stem_id for t in wsd}) == 1 and len({t.trial_id for t in wsd}) == 3
    assert not {t.trial_id for t in wsd} & {t.trial_id for t in cosine}
    # reuse changes how a point is trained, not what it computes: same ids, no branch points
    assert [t.trial_id for t in whole] == [t.trial_id for t in wsd] and all(t.start_step == 0 for t in whole)
    for t in wsd:
        assert t.start_step == cooldown_start(t.steps, t.train) > 0
    # the cooldown is the branch's, not the stem's
    assert {t.stem_id for t in short} == {t.stem_id for t in wsd}
    assert not {t.trial_id for t in short} & {t.trial_id for t in wsd}


def test_shared_ladder_keeps_shared_sizes_and_snaps_others():
    quick = {2e11: [9e3, 16e3, 25e3, 46e3], 6e11: [16e3, 25e3, 35e3, 74e3, 123e3], 2e12: [35e3, 74e3, 123e3, 220e3]}
    assert shared_ladder(quick) == quick
    spec = load_spec(str(ROOT / "specs" / "simulated_grid.yaml"))
    sizes = {b: spec.sweep.sizes_for(b) for b in spec.sweep.budgets}
    snapped = shared_ladder(sizes)
    for b in sizes:
        assert len(set(snapped[b])) == len(sizes[b])  # no two sizes of a budget on one rung
        assert all(abs(math.log(s / o)) <= 0.5 * math.log(2 ** 0.5) + 1e-6 for s, o in zip(snapped[b], sizes[b]))
    rungs = {s for v in snapped.values() for s in v}
    assert len(rungs) == 22 < len({s for v in sizes.values() for s in v}) == 81


# -- sweeps ---------------------------------------------------------------------------------
def _run(spec, cache_dir):
    return run_sweep(spec, executor_factory=lambda: InlineExecutor(), cache_dir=cache_dir, write_report=False)


def test_branches_equal_whole_runs_and_cost_less(tmp_path, cache_dir):
    spec, planned = _grid(tmp_path, **WSD)
    out = _run(spec, cache_dir)
    assert out.trained == 3
    store = ResultStore(spec.sweep_dir)
    rows = store.read_table("trials").to_pandas()
    points, stems = rows[rows["role"] == "point"], rows[rows["role"] == "stem"]
    assert set(points["trial_id"]) == {t.trial_id for t in planned}
    assert len(stems) == 3 and set(stems["parent_id"]) == set(points["parent_id"]) == {planned[0].stem_id}
    # The stem is trained once, in segments up its branch points; each branch only its cooldown.
    n, bt = planned[0].n_params, planned[0].train.batch_tokens
    last = max(t.start_step for t in planned)
    assert stems["flops_spent"].sum() == pytest.approx(train_flops(n, last * bt))
    for t in planned:
        row = points[points["trial_id"] == t.trial_id].iloc[0]
        assert row["flops_spent"] == pytest.approx(train_flops(n, t.tokens - t.start_step * bt))
        assert row["flops"] == pytest.approx(train_flops(n, t.tokens))
    assert store.list_names("checkpoints", dirs=True) == []  # every stem checkpoint deleted at the end
    # The same points trained whole, start to end, give bit-identical losses.
    whole_spec, _ = _grid(tmp_path / "whole", schedule="wsd", reuse=False)
    _run(whole_spec, cache_dir)
    whole = ResultStore(whole_spec.sweep_dir).read_table("trials").to_pandas().set_index("trial_id")
    assert len(whole) == 3 and (whole["role"] == "point").all()
    for _, r in points.iterrows():
        assert r["eval_loss"] == whole.loc[r["trial_id"], "eval_loss"]
    steps = store.read_table("steps").to_pandas()
    longest = max(planned, key=lambda t: t.tokens)
    mine = steps[steps["trial_id"] == longest.trial_id].sort_values("step")
    assert mine["step"].iloc[-1] == longest.steps and mine["step"].iloc[0] < longest.start_step  # the stem's rows too


def test_kept_stem_serves_a_later_longer_d(tmp_path, cache_dir):
    spec, planned = _grid(tmp_path, schedule="wsd", keep_stems=True)
    _run(spec, cache_dir)
    store = ResultStore(spec.sweep_dir)
    stem = planned[0].stem_id
    last = max(t.start_step for t in planned)
    assert store.stem_steps(stem) == [last]  # the stem's last checkpoint only
    d = spec.model_dump(mode="json")
    d["sweep"]["tokens"] = [8192, 16384, 32768, 65536]
    longer = parse_spec(d)
    _run(longer, cache_dir)
    rows = store.read_table("trials").to_pandas()
    stems = rows[rows["role"] == "stem"]
    new = max(plan_trials(longer, TrialFactory(longer)), key=lambda t: t.tokens)
    n, bt = new.n_params, new.train.batch_tokens
    # One new segment, from the kept checkpoint to the new branch point: the extension only.
    assert len(stems) == 4
    assert stems["flops_spent"].sum() == pytest.approx(train_flops(n, new.start_step * bt))


def test_simulated_grid_spends_at_most_80_percent(tmp_path, capsys):
    d = yaml.safe_load((ROOT / "specs" / "simulated_grid.yaml").read_text())
    d["results"], d["train"] = str(tmp_path / "r"), WSD
    spec = parse_spec(d)
    out = run_sweep(spec, executor_factory=lambda: InlineExecutor(), write_report=False)
    rows = ResultStore(spec.sweep_dir).read_table("trials").to_pandas()
    points = rows[rows["role"] == "point"]
    assert len(points) == 81 == out.n_trials and rows["role"].eq("stem").sum() > 0
    assert rows["flops_spent"].sum() <= 0.80 * points["flops"].sum()
    assert out.fit is not None and out.fit.n_runs == 81  # the fit reads point rows only
    assert out.fit.flops_spent == pytest.approx(rows["flops_spent"].sum())
    assert out.reuse.startswith("Run reuse: 22 stems") and "saved" in out.reuse
    # fit on the directory counts the stems' FLOPs too, as the run did
    capsys.readouterr()
    assert main(["fit", spec.sweep_dir, "--json", "--bootstrap", "50"]) == 0
    assert json.loads(capsys.readouterr().out)["flops_spent"] == pytest.approx(rows["flops_spent"].sum())
    assert schedule_factor(spec.train) < 1 and schedule_factor(TrainConfig()) == 1.0
    stems = rows[rows["role"] == "stem"]
    assert (stems["eval_loss"] > 0).all() and STABLE_GAP > 0


def test_status_json_reports_the_saving(tmp_path, cache_dir, capsys):
    spec, _ = _grid(tmp_path, **WSD)
    _run(spec, cache_dir)
    capsys.readouterr()
    assert main(["status", spec.sweep_dir, "--json"]) == 0
    s = json.loads(capsys.readouterr().out)
    assert s["trials"] == 3 and s["stem_segments"] == 3
    assert 0 < s["flops_spent"] < s["flops_points"] and s["saving"] == pytest.approx(1 - s["flops_spent"] / s["flops_points"])
    assert main(["status", spec.sweep_dir]) == 0
    assert "saved by 3 stem segments" in capsys.readouterr().out


@pytest.mark.ray
def test_wsd_sweep_on_ray_matches_in_process(ray_cluster, tmp_path, cache_dir, capsys):
    os.environ["SCALESWEEP_CACHE"] = cache_dir
    d = tiny_spec_dict(str(tmp_path / "ray"), name="wsd-ray")
    d["train"] = {**d["train"], **WSD}
    path = tmp_path / "wsd.yaml"
    path.write_text(yaml.safe_dump(d))
    assert main(["run", str(path), "--no-dashboard"]) == 0
    out = capsys.readouterr().out
    assert "6 trials, 6 trained now" in out and "Run reuse: 3 stems in 6 segments" in out
    ray_rows = ResultStore(str(tmp_path / "ray" / "wsd-ray")).read_table("trials").to_pandas()
    spec = parse_spec({**d, "results": str(tmp_path / "inline")})
    _run(spec, cache_dir)
    inline = ResultStore(spec.sweep_dir).read_table("trials").to_pandas().set_index("trial_id")
    assert len(ray_rows) == len(inline) == 12  # 6 points, 6 stem segments (3 shapes x 2 budgets)
    for _, r in ray_rows.iterrows():
        assert r["eval_loss"] == inline.loc[r["trial_id"], "eval_loss"]


def test_stems_on_object_storage(tmp_path):
    """Stem checkpoints go through the store's filesystem: memory:// (fsspec) as a local path."""
    import uuid

    d = yaml.safe_load((ROOT / "specs" / "simulated_grid.yaml").read_text())
    d["results"], d["train"] = f"memory://reuse-{uuid.uuid4().hex[:8]}", {"schedule": "wsd", "keep_stems": True}
    d["sweep"]["budgets"] = d["sweep"]["budgets"][-3:]
    spec = parse_spec(d)
    run_sweep(spec, executor_factory=lambda: InlineExecutor(), write_report=False)
    store = ResultStore(spec.sweep_dir)
    rows = store.read_table("trials").to_pandas()
    assert (rows["role"] == "point").sum() == 27 and (rows["role"] == "stem").sum() > 0
    stems = store.list_names("checkpoints", dirs=True)
    assert stems and all(len(store.stem_steps(s)) == 1 for s in stems)  # keep_stems: each stem's last


# -- a stem segment trained again keeps its own row -------------------------------------------
def _sim(tmp_path, tokens, cooldown: float) -> SweepSpec:
    return parse_spec({"name": "again", "trainer": "simulated", "results": str(tmp_path / "r"),
                       "world": {"law": {"E": 1.69, "A": 400, "B": 400, "alpha": 0.31, "beta": 0.31}},
                       "sweep": {"kind": "grid", "model_sizes": [1e6], "tokens": list(tokens)},
                       "train": {"schedule": "wsd", "cooldown": {"fraction": cooldown}},
                       "fit": {"target_compute": 1e19}})


def _spent(spec, capsys) -> float:
    capsys.readouterr()
    assert main(["status", spec.sweep_dir, "--json"]) == 0
    return json.loads(capsys.readouterr().out)["flops_spent"]


def test_a_stem_segment_trained_again_keeps_the_earlier_row(tmp_path, capsys):
    """A later run that needs a stretch of a stem already trained once (its checkpoint deleted at
    the end of the first run; here a new cooldown puts a new point's branch point where an old
    one's was) trains it again: both segments computed their FLOPs, so both keep a row and
    flops_spent counts both."""
    first = _sim(tmp_path, [2e7], 0.5)  # branch point: step 1e7
    run_sweep(first, executor_factory=InlineExecutor, write_report=False)
    later = _sim(tmp_path, [4e7], 0.75)  # branch point: step 4e7 - 3e7 = 1e7 again
    (old,), (new,) = plan_trials(first, TrialFactory(first)), plan_trials(later, TrialFactory(later))
    assert old.stem_id == new.stem_id and old.start_step == new.start_step == 10**7
    out = run_sweep(later, executor_factory=InlineExecutor, write_report=False)
    rows = ResultStore(later.sweep_dir).read_table("trials").to_pandas()
    stems = rows[rows["role"] == "stem"]
    assert len(stems) == 2 and rows["trial_id"].is_unique and set(stems["status"]) == {"completed"}
    segment_flops = train_flops(old.n_params, 10**7)
    assert list(stems["flops_spent"]) == [segment_flops, segment_flops]
    computed = 2 * segment_flops + train_flops(old.n_params, 10**7) + train_flops(new.n_params, 3 * 10**7)
    assert rows["flops_spent"].sum() == pytest.approx(computed, rel=1e-12)
    assert _spent(later, capsys) == pytest.approx(computed, rel=1e-12)
    assert out.reuse.startswith("Run reuse: 1 stems in 2 segments")  # the stem of this sweep's point, both runs


def test_a_failed_stem_segment_keeps_its_row_when_retried(tmp_path, capsys):
    """A segment that fails after training (its checkpoint cannot be written) records the FLOPs
    it spent; the re-run that retries it adds a row of its own instead of replacing that one."""
    spec = _sim(tmp_path, [2e7, 4e7], 0.5)
    planned = plan_trials(spec, TrialFactory(spec))
    first_stop = min(t.start_step for t in planned)
    blocker = os.path.join(spec.sweep_dir, "checkpoints", planned[0].stem_id, f"{first_stop}.pt")
    os.makedirs(blocker)
    assert run_sweep(spec, executor_factory=InlineExecutor, write_report=False).failed == 2
    failed = ResultStore(spec.sweep_dir).read_table("trials").to_pandas()
    failed = failed[failed["role"] == "stem"]
    assert list(failed["status"]) == ["failed"] and failed["flops_spent"].item() > 0
    if os.path.isdir(blocker):  # the sweep's end may have removed the stem's folder with it
        os.rmdir(blocker)
    assert run_sweep(spec, executor_factory=InlineExecutor, write_report=False).failed == 0
    rows = ResultStore(spec.sweep_dir).read_table("trials").to_pandas()
    stems = rows[rows["role"] == "stem"]
    assert failed["trial_id"].item() in set(stems["trial_id"])  # the failed attempt's row is kept
    assert sorted(stems["status"]) == ["completed", "completed", "failed"] and rows["trial_id"].is_unique
    assert _spent(spec, capsys) == pytest.approx(rows["flops_spent"].sum(), rel=1e-12)
    assert rows["flops_spent"].sum() > failed["flops_spent"].item() + train_flops(planned[0].n_params, 4 * 10**7) * 0.5
