"""End to end on a real local Ray: spec -> Ray tasks -> real training -> Parquet -> fit -> report,
then the commands a user runs on the results."""

import json
import os

import pytest
import yaml

from conftest import tiny_spec_dict
from orchestrator import load_steps, load_trials
from orchestrator.cli import main

pytestmark = pytest.mark.ray


@pytest.fixture(scope="module")
def finished_sweep(ray_cluster, tmp_path_factory, cache_dir):
    os.environ["SCALESWEEP_CACHE"] = cache_dir
    tmp = tmp_path_factory.mktemp("e2e")
    spec = tiny_spec_dict(str(tmp / "results"), name="e2e")
    path = tmp / "e2e.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path, tmp / "results" / "e2e"


def test_sweep_trains_every_trial_and_fits(finished_sweep, capsys):
    path, results = finished_sweep
    assert main(["run", str(path)]) == 0
    out = capsys.readouterr().out
    assert "6 trials, 6 trained now, 0 already finished, 0 failed" in out
    assert "Fitted law" in out and "Compute-optimal frontier" in out
    trials = load_trials(str(results))
    assert len(trials) == 6 and set(trials["status"]) == {"completed"}
    assert (trials["flops"] == 6 * trials["n_params"] * trials["tokens"]).all()
    assert trials["finished_at"].notna().all()
    assert trials["eval_loss"].between(1.0, 5.6).all()
    # what each trial used: a source for its energy, and no GPU figure on a CPU-only run
    readable_rapl = _rapl_readable()
    assert set(trials["energy_source"]) == ({"rapl"} if readable_rapl else {"estimated"})
    assert (trials["energy_j"] > 0).all() and trials["energy_note"].str.len().gt(0).all()
    assert (trials["device"] == "cpu").all() and (trials["gpu_count"] == 0).all() and (trials["gpu_seconds"] == 0).all()
    assert trials["mfu"].isna().all() and trials["peak_flops"].isna().all()
    assert (trials["tokens_per_s"] > 0).all() and (trials["flops_per_token"] > 0).all()
    steps = load_steps(str(results))
    assert set(steps["trial_id"]) == set(trials["trial_id"])
    last = steps.sort_values("step").groupby("trial_id").tail(1).set_index("trial_id")
    assert (last.loc[trials["trial_id"], "tokens"].values == trials["tokens"].values).all()
    for name in ("index.html", "isoflop.png", "frontier.png", "n_opt.png", "d_opt.png", "residuals.png", "order.png",
                 "flops_over_time.png"):
        assert (results / "report" / name).stat().st_size > 1000
    html = (results / "report" / "index.html").read_text()
    assert "data:image/png;base64," in html  # self-contained


def _rapl_readable() -> bool:
    from workers.run.counters import CounterUnavailable, RaplCounter

    try:
        RaplCounter().start(thread=False)
        return True
    except CounterUnavailable:
        return False


def test_trials_are_named_tasks_in_ray(finished_sweep):
    from ray.util.state import list_tasks

    names = {t.name for t in list_tasks(filters=[("func_or_class_name", "=", "_trial_task")], limit=1000)}
    trials = load_trials(str(finished_sweep[1]))
    assert set(trials["name"]) <= names


def test_rerun_trains_nothing(finished_sweep, capsys):
    path, results = finished_sweep
    before = {p: p.stat().st_mtime_ns for p in (results / "trials").iterdir()}
    assert main(["run", str(path)]) == 0
    assert "0 trained now, 6 already finished" in capsys.readouterr().out
    assert {p: p.stat().st_mtime_ns for p in (results / "trials").iterdir()} == before


def test_status_query_fit_report(finished_sweep, capsys):
    _, results = finished_sweep
    r = str(results)
    assert main(["status", r]) == 0
    assert "6 trials planned; 6 completed; 0 not finished" in capsys.readouterr().out
    assert main(["query", r, "select count(*) as n from trials t join steps s using (trial_id)", "--format", "csv"]) == 0
    n = int(capsys.readouterr().out.split()[1])
    assert n == len(load_steps(r))
    assert main(["fit", r, "--json", "--compute", "1e13"]) == 0
    fit = json.loads(capsys.readouterr().out)
    assert fit["target"]["compute"] == 1e13 and fit["n_trials"] == 6
    assert fit["params"]["alpha"] >= 0 and fit["params"]["beta"] >= 0
    assert fit["cost"]["sweep"]["gpu_hours"] == 0 and fit["cost"]["sweep"]["cpu_core_hours"] > 0
    # what the sweep cost, and its largest trial projected from the others as a user would
    trials = load_trials(r)
    largest = trials.sort_values(["n_params", "tokens"]).iloc[-1]
    table = results.parent / "others.csv"
    trials[trials["trial_id"] != largest["trial_id"]].to_csv(table, index=False)
    assert main(["cost", str(table), "--at-n", str(largest["n_params"]), "--at-d", str(largest["tokens"]), "--json"]) == 0
    cost = json.loads(capsys.readouterr().out)
    wall = cost["projection"]["wall_hours"]
    assert cost["projection"]["device"] == "cpu" and cost["projection"]["gpu_hours"]["estimate"] == 0
    # seconds-long trials on a shared CI machine: a factor, not the 25 % of bench/bench_cost.py
    assert 0.33 < wall["estimate"] * 3600 / largest["wall_s"] < 3
    os.remove(results / "report" / "index.html")
    assert main(["report", r]) == 0
    assert (results / "report" / "index.html").exists()
    assert "<h2>Cost</h2>" in (results / "report" / "index.html").read_text()


def test_bad_query_and_missing_results(finished_sweep, capsys, tmp_path):
    _, results = finished_sweep
    assert main(["query", str(results), "select no_such_column from trials"]) == 2
    err = capsys.readouterr().err
    assert "no_such_column" in err and "\n" not in err.strip()
    assert main(["fit", str(tmp_path / "nowhere")]) == 2
    assert "results directory not found" in capsys.readouterr().err



@pytest.mark.slow  # 23 s; an adaptive sweep through Ray also runs, killed and resumed, in tests/test_faults.py
def test_simulated_adaptive_sweep_through_ray(ray_cluster, tmp_path, capsys):
    """trainer: simulated + planner: adaptive through real Ray tasks; a re-run trains nothing."""
    spec = {
        "name": "sim", "trainer": "simulated", "planner": "adaptive", "results": str(tmp_path / "results"),
        "world": {"law": {"E": 1.69, "A": 400, "B": 400, "alpha": 0.31, "beta": 0.31}, "seed": 1},
        "adaptive": {"min_flops": 1e15, "max_flops": 1e17, "n_range": [1e6, 1e9], "flop_budget": 5e17,
                     "max_trials": 24, "initial_trials": 6},
        "fit": {"target_compute": 1e19},
    }
    path = tmp_path / "sim.yaml"
    path.write_text(yaml.safe_dump(spec))
    assert main(["run", str(path)]) == 0
    out = capsys.readouterr().out
    assert "Adaptive planner stopped:" in out and "Fitted law" in out
    trials = load_trials(str(tmp_path / "results" / "sim"))
    assert 6 <= len(trials) <= 24 and (trials["status"] == "completed").all()
    assert (6.0 * trials["n_params"] * trials["tokens"]).sum() <= 5e17 * 1.001
    assert main(["run", str(path)]) == 0
    assert "0 trained now" in capsys.readouterr().out
    # `fit` knows the runs came from an adaptive design (plan.json): no IsoFLOP-edge flags
    assert main(["fit", str(tmp_path / "results" / "sim"), "--json", "--bootstrap", "50"]) == 0
    fitted = json.loads(capsys.readouterr().out)
    assert not any("IsoFLOP" in f or "Approaches 2 and 3" in f for f in fitted["flags"])
    assert len(load_trials(str(tmp_path / "results" / "sim"))) == len(trials)


def test_embedded_ray_listens_on_loopback_only(ray_cluster):
    import re
    import shutil
    import subprocess

    if not shutil.which("ss"):
        pytest.skip("needs `ss` (iproute2) to list listening sockets")
    out = subprocess.run(["ss", "-ltnpH"], capture_output=True, text=True).stdout
    ray_lines = [ln for ln in out.splitlines() if re.search(r'"(gcs_server|raylet|ray::[^"]*)"', ln)]
    assert ray_lines, "no Ray listener found"
    for line in ray_lines:
        local = line.split()[3]
        assert local.startswith(("127.0.0.1:", "[::ffff:127.0.0.1]:", "[::1]:")), line


@pytest.mark.slow  # 24 s: waits for Ray's metrics agent to export (run with -m slow)
def test_driver_exports_sweep_metrics_to_prometheus(ray_cluster, tmp_path, capsys):
    """The sweep's gauges reach the node's Prometheus endpoint while it runs.

    Ray exports application metrics about every 10 s and drops a gauge that has not been set
    for about 20 s, so they are read during a sweep long enough to span exports (the driver
    re-sets them every step), and until the final values appear just after it.
    """
    import threading
    import time
    import urllib.request

    import ray

    spec = tmp_path / "prom.yaml"
    spec.write_text(yaml.safe_dump({
        "name": "prom", "trainer": "simulated", "results": str(tmp_path / "results"),
        "world": {"law": {"E": 1.69, "A": 400, "B": 400, "alpha": 0.31, "beta": 0.31}, "duration_s": 4.0},
        "sweep": {"kind": "isoflop", "budgets": [1e17, 1e18], "model_sizes": [1e7, 3e7, 1e8, 3e8]},
        "fit": {"target_compute": 1e20},
    }))
    port = ray._private.worker._global_node.metrics_export_port
    readings, after, done = [], [], threading.Event()

    def scrape():
        # Ray prefixes application metrics with "ray_".
        while True:
            text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
            lines = [ln for ln in text.splitlines() if ln.startswith("ray_scalesweep_") and 'sweep="prom"' in ln]
            values = {ln.split("{")[0].removeprefix("ray_scalesweep_"): float(ln.rsplit(" ", 1)[1]) for ln in lines}
            readings.append(values)
            if done.is_set():  # the run has ended: its final values are exported within ~10 s
                after.append(values)
                if values.get("trials_finished") == 8 or len(after) > 30:
                    return
            time.sleep(1.0)

    scraper = threading.Thread(target=scrape, daemon=True)
    scraper.start()
    try:
        assert main(["run", str(spec)]) == 0
    finally:
        done.set()
    scraper.join(timeout=40)
    capsys.readouterr()
    seen = [r for r in readings if r]
    assert seen, "no scalesweep gauge with sweep=prom was ever exported"
    assert any(r.get("trials_running", 0) >= 1 for r in seen)  # exported mid-sweep, not only at the end
    final = seen[-1]
    assert final.get("trials_finished") == 8, final
    assert final["trials_pending"] == final["trials_running"] == final["trials_queued"] == 0
    assert final["flops_spent"] == final["flops_budget"] > 0
    assert final["tokens_per_second"] > 0 and 1.0 < final["best_eval_loss"] < 10
    # simulated trials train nothing: no energy, and no GPU held
    assert final["energy_joules"] == 0 and final["gpu_seconds"] == 0
