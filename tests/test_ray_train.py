"""Trials on several ranks through Ray Train, beside single-rank ones, on the session's real Ray.

- a tiny-GPT sweep whose largest size runs on 2 ranks by a resources.by_size rule: every trial
  once, and the 2-rank trial's losses those of the same trial on 1 rank (1e-5 relative);
- a rank killed with SIGKILL mid-trial: Ray Train restarts the group, which resumes from the
  trial's checkpoint; one row, the final loss an uninterrupted run's;
- a mixed simulated sweep (many 1-CPU trials, several 2-rank ones) on the 2-CPU Ray: it ends,
  every trial once, and the executor's ledger never holds more than the cluster has;
- resource settings that cannot work: one line, before anything runs.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import threading
import time

import pyarrow.parquet as pq
import pytest
import yaml

from conftest import tiny_spec_dict
from orchestrator.cli import main
from orchestrator.errors import UserError
from orchestrator.planning.trials import TrialFactory, plan_trials
from orchestrator.spec import parse_spec
from orchestrator.sweep import run_sweep
from workers.run import run_trial
from workers.store import ResultStore

RULE = {"by_size": [{"min_params": 6e3, "workers": 2, "strategy": "fsdp"}]}


def _spec(tmp_path, **over):
    over.setdefault("resources", RULE)
    return parse_spec(tiny_spec_dict(str(tmp_path / "results"), name="ranks", **over))


def _losses(root, tid):
    return [(r["step"], r["train_loss"], r["eval_loss"]) for r in pq.read_table(f"{root}/steps/{tid}.parquet").to_pylist()]


def test_bad_rank_settings_are_one_line_before_anything_runs(tmp_path):
    with pytest.raises(UserError, match=r"by_size\[0\]\.gpus=0\.5 with by_size\[0\]\.workers=2"):
        _spec(tmp_path, resources={"by_size": [{"min_params": 1e3, "workers": 2, "gpus": 0.5}]})
    with pytest.raises(UserError, match="3 ranks cannot split evenly"):
        _spec(tmp_path, resources={"workers": 3})
    with pytest.raises(UserError, match="wsd stems and branches run on one rank"):
        _spec(tmp_path, train={"schedule": "wsd", "cooldown": {"fraction": 0.2}})
    with pytest.raises(UserError, match="by_size: rules must be in increasing min_params"):
        _spec(tmp_path, resources={"by_size": [{"min_params": 1e4, "workers": 2}, {"min_params": 1e3, "workers": 2}]})
    spec = _spec(tmp_path, resources={"workers": 4})  # fine as a spec: a 4-CPU node could run it
    path = tmp_path / "four.yaml"
    path.write_text(yaml.safe_dump(spec.model_dump(mode="json")))
    assert main(["run", str(path), "--num-cpus", "2"]) == 2
    assert not (tmp_path / "results" / "ranks").exists()  # refused before anything was written


def test_the_factory_places_trials_by_size(tmp_path, cache_dir):
    spec = _spec(tmp_path)
    trials = plan_trials(spec, TrialFactory(spec, cache_dir))
    big = [t for t in trials if t.n_params >= 6e3]
    assert big and all(t.workers == 2 and t.strategy == "fsdp" for t in big)
    assert all(t.workers == 1 for t in trials if t.n_params < 6e3)
    # how, not what: the ids are those of the same spec on one rank
    one = plan_trials(parse_spec(tiny_spec_dict(str(tmp_path / "results"), name="ranks")), TrialFactory(spec, cache_dir))
    assert sorted(t.trial_id for t in one) == sorted(t.trial_id for t in trials)


@pytest.mark.ray
def test_a_sweep_with_a_two_rank_rung_matches_one_rank(ray_cluster, tmp_path, cache_dir, capsys):
    """Rank counts differ in float rounding only (the batch's sum split in two), which compounds
    over steps: 1e-5 holds for these trials' ~40 steps (docs/benchmarks.md: 2e-5 after 126)."""
    os.environ["SCALESWEEP_CACHE"] = cache_dir
    spec = _spec(tmp_path, sweep={"kind": "isoflop", "budgets": [3e8, 5e8], "model_sizes": [2e3, 4e3, 8e3]})
    out = run_sweep(spec, cache_dir=cache_dir, write_report=False)
    assert out.failed == 0 and out.trained == out.n_trials
    store = ResultStore(spec.sweep_dir)
    rows = store.read_table("trials").to_pandas()
    assert rows["trial_id"].is_unique and (rows["status"] == "completed").all()
    two = rows[rows["workers"] == 2]
    assert len(two) and (two["strategy"] == "fsdp").all() and (rows[rows["workers"] == 1]["strategy"].isna()).all()
    # the 2-rank trial against the same trial on 1 rank, elsewhere
    trial = next(t for t in plan_trials(spec, TrialFactory(spec, cache_dir)) if t.trial_id == two["trial_id"].iloc[0])
    alone = run_trial(dataclasses.replace(trial, workers=1, results=str(tmp_path / "alone")))
    assert two["eval_loss"].iloc[0] == pytest.approx(alone.eval_loss, rel=1e-5)
    for (s, a, e), (s1, a1, e1) in zip(_losses(spec.sweep_dir, trial.trial_id), _losses(tmp_path / "alone", trial.trial_id)):
        assert s == s1 and a == pytest.approx(a1, rel=1e-5) and (e is None or e == pytest.approx(e1, rel=1e-5))


def _train_workers() -> list[int]:
    from ray.util.state import list_actors

    return [a.pid for a in list_actors(filters=[("state", "=", "ALIVE")], limit=1000)
            if "RayTrainWorker" in (a.class_name or "")]


@pytest.mark.ray
def test_a_rank_killed_mid_trial_resumes_from_the_checkpoint(ray_cluster, tmp_path, cache_dir):
    os.environ["SCALESWEEP_CACHE"] = cache_dir
    spec = _spec(tmp_path, sweep={"kind": "grid", "model_sizes": [8e3], "tokens": [4e5]},
                 train={"checkpoint_every_s": 0.2, "n_evals": 2, "log_every": 5},
                 resources={"workers": 2, "strategy": "ddp", "max_retries": 2})
    [trial] = plan_trials(spec, TrialFactory(spec, cache_dir))
    killed = []

    def kill_a_rank():
        ckpt = os.path.join(spec.sweep_dir, "checkpoints", f"{trial.trial_id}.pt")
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not os.path.exists(ckpt):
            time.sleep(0.05)
        pids = _train_workers()
        if pids:
            os.kill(pids[-1], signal.SIGKILL)
            killed.append(pids[-1])

    killer = threading.Thread(target=kill_a_rank, daemon=True)
    killer.start()
    out = run_sweep(spec, cache_dir=cache_dir, write_report=False)
    killer.join(timeout=5)
    assert killed, "no rank was found to kill"
    store = ResultStore(spec.sweep_dir)
    [row] = store.read_table("trials").to_pylist()
    assert out.failed == 0 and row["status"] == "completed" and row["workers"] == 2
    alone = run_trial(dataclasses.replace(trial, workers=1, results=str(tmp_path / "alone")))
    assert row["eval_loss"] == pytest.approx(alone.eval_loss, rel=1e-5)
    assert [s for s, _, _ in _losses(spec.sweep_dir, trial.trial_id)] == [s for s, _, _ in _losses(tmp_path / "alone", trial.trial_id)]


@pytest.mark.ray
def test_a_mixed_simulated_sweep_never_holds_more_than_the_cluster(ray_cluster, tmp_path, monkeypatch):
    import ray

    from orchestrator.running.executor import RayExecutor

    spec = parse_spec({
        "name": "mixed", "trainer": "simulated", "results": str(tmp_path / "results"),
        "world": {"law": {"E": 1.7, "A": 400, "B": 400, "alpha": 0.3, "beta": 0.3}, "duration_s": 0.3},
        "sweep": {"kind": "isoflop", "budgets": [1e17, 3e17, 1e18], "model_sizes": [1e7, 2e7, 5e7, 1e8, 3e8]},
        "resources": {"cpus": 1, "by_size": [{"min_params": 9e7, "workers": 2}]},
        "fit": {"target_compute": 1e20},
    })
    capacity = ray.cluster_resources()["CPU"]
    peak = [0.0]
    submit = RayExecutor.submit

    def watched(self, trial):
        submit(self, trial)
        peak[0] = max(peak[0], self._held[0])

    monkeypatch.setattr(RayExecutor, "submit", watched)
    out = run_sweep(spec, write_report=False)
    rows = ResultStore(spec.sweep_dir).read_table("trials").to_pandas()
    assert out.failed == 0 and len(rows) == out.n_trials == 15 and rows["trial_id"].is_unique
    assert (rows["workers"] == 2).sum() == 6 and 0 < peak[0] <= capacity


@pytest.mark.ray
def test_the_driver_killed_during_a_two_rank_trial_then_resumed(ray_cluster, tmp_path, cache_dir):
    """kill -9 of the driver takes its launcher, Ray Train's controller and the ranks with it (they
    are owned by it); the re-run finishes every point once, the 2-rank trial from its checkpoint."""
    import subprocess
    import sys

    import ray

    from conftest import ROOT
    from orchestrator import load_trials

    d = tiny_spec_dict(str(tmp_path / "results"), name="kill-ranks", resources={"by_size": [{"min_params": 6e3, "workers": 2}]},
                       train={"checkpoint_every_s": 0.2}, sweep={"kind": "isoflop", "budgets": [1.5e9], "model_sizes": [2e3, 8e3]})
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(d))
    env = dict(os.environ, PYTHONPATH=str(ROOT), RAY_AUTH_MODE="token", SCALESWEEP_CACHE=cache_dir)
    cmd = [sys.executable, "-m", "orchestrator.cli", "run", str(path), "--address", ray.get_runtime_context().gcs_address]
    driver = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    sweep_dir = tmp_path / "results" / "kill-ranks"
    spec = parse_spec(d)
    [big] = [t for t in plan_trials(spec, TrialFactory(spec, cache_dir)) if t.workers == 2]
    ckpt = sweep_dir / "checkpoints" / f"{big.trial_id}.pt"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not ckpt.exists():  # the 2-rank trial is under way
        time.sleep(0.05)
    assert ckpt.exists()
    driver.kill()
    driver.wait(timeout=30)
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    trials = load_trials(str(sweep_dir))
    assert trials["trial_id"].is_unique and len(trials) == 2 and set(trials["status"]) == {"completed"}
    assert sorted(trials["workers"]) == [1, 2] and not ckpt.exists()  # resumed, finished, its checkpoint gone


LAB_DIST = '''
import torch
import torch.distributed as dist
from scalesweep import Outcome


def size(target_n):
    width = max(4, round(target_n ** 0.5))
    return {"width": width}, width * width


def train(trial, ctx):
    rank = dist.get_rank()
    if trial.settings.get("fail"):
        raise ValueError(f"bad shard on rank {rank}")
    x = torch.ones(1)
    for step in (1, 2):
        dist.all_reduce(x)  # every rank trains; rank 0 alone reports, as a ported script would
        if rank == 0:
            ctx.report(step, trial.tokens * step // 2, train_loss=3.0 / step)
    return Outcome(eval_loss=2.0 + 0.0 * x.item(), n_params=trial.model["width"] ** 2)
'''


@pytest.mark.ray
@pytest.mark.parametrize("fail", [False, True])
def test_a_labs_trainer_on_two_ranks_reports_on_rank_0_or_fails_with_its_own_error(ray_cluster, tmp_path, fail):
    """A Python trainer on 2 ranks that reports on rank 0 alone completes (the other rank owes no
    rows); one that raises on every rank leaves rank 0's FAILED row, its traceback and usage
    kept, with Ray Train's error added after the group's restart."""
    from orchestrator import load_trials
    from orchestrator.spec import load_spec

    (tmp_path / "lab_dist.py").write_text(LAB_DIST)
    d = {"name": "lab-ranks", "results": str(tmp_path / "results"),
         "sweep": {"kind": "grid", "model_sizes": [1e4], "tokens": [1e5]},
         "trainer": {"function": "lab_dist:train", "settings": {"fail": fail}}, "model": {"size": "lab_dist:size"},
         "train": {"lr": 1e-3, "batch_tokens": 1024}, "resources": {"cpus": 1, "workers": 2, "max_retries": 1}}
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(d))
    out = run_sweep(load_spec(tmp_path / "spec.yaml"), write_report=False)
    [row] = load_trials(str(tmp_path / "results" / "lab-ranks")).to_dict("records")
    assert row["workers"] == 2 and row["cpus"] == 2 and row["energy_source"] in ("rapl", "estimated")
    if not fail:
        assert out.failed == 0 and row["status"] == "completed" and row["eval_loss"] == 2.0
        return
    assert out.failed == 1 and row["status"] == "failed"
    error = row["error"]
    assert error.startswith("ValueError: bad shard on rank 0") and "lab_dist.py" in error  # rank 0's own traceback
    assert "failed on Ray Train after 1 restarts" in error and row["wall_s"] > 0
