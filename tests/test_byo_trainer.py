"""A lab's own trainer, written outside the project against the documented contract only, swept on a
real local Ray: the driver is killed with kill -9 mid-sweep and resumed. Every step of every point
is trained once, but for the one in flight at the kill (the trainer logs its own steps), the
command's processes die with the driver, and the fit recovers the law the trainer hides. Once through the command path (a ladder
of sizes), once through the Python path (a size hook)."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections import Counter

import pytest
import yaml

from conftest import ROOT
from orchestrator import load_trials

pytestmark = pytest.mark.ray

# The law the trainers hide: L = E + A / N^alpha + B / D^beta (a = beta / (alpha + beta) = 0.5).
LAW = {"E": 1.7, "A": 400.0, "B": 400.0, "alpha": 0.34, "beta": 0.34}
STEPS = 8  # each trial takes STEPS x 0.04 s, with a checkpoint after every step

# The hidden law and the trainer's work, shared by both trainers (written into their files).
COMMON = textwrap.dedent(f"""
    import hashlib, json, math, os, time
    LAW = {LAW!r}

    def loss_at(n, tokens, trial_id):
        base = LAW["E"] + LAW["A"] / n ** LAW["alpha"] + LAW["B"] / tokens ** LAW["beta"]
        # +-0.15 % noise, a function of the point alone: the same on every attempt and every run
        u = int(hashlib.sha256(f"{{n}} {{tokens}}".encode()).hexdigest()[:8], 16) / 2**32
        return base * (1 + 0.003 * (u - 0.5))

    def log(path, event, trial_id, step=0, worker=None):
        # worker: the Ray worker's pid (a command's parent; a function runs in it)
        with open(path, "a") as f:
            f.write(f"{{event}} {{trial_id}} {{os.getpid()}} {{step}} {{worker or os.getpid()}}\\n")
""")

COMMAND = COMMON + textwrap.dedent("""
    import sys
    trial = json.load(open(os.environ["SCALESWEEP_TRIAL"]))
    out, ckpt = os.environ["SCALESWEEP_OUTPUT"], os.path.join(os.environ["SCALESWEEP_CHECKPOINT_DIR"], "state.json")
    tid, n = trial["trial_id"], trial["model"]["width"] ** 2   # the ladder's N is width^2
    log(trial["settings"]["log"], "start", tid, worker=os.getppid())
    step = json.load(open(ckpt))["step"] if os.path.exists(ckpt) else 0
    with open(os.path.join(out, "metrics.jsonl"), "a") as m:
        for step in range(step + 1, 9):
            time.sleep(0.04)
            log(trial["settings"]["log"], "step", tid, step, os.getppid())
            tokens = trial["tokens"] * step // 8
            m.write(json.dumps({"step": step, "tokens": tokens, "train_loss": loss_at(n, tokens, tid)}) + "\\n")
            m.flush()
            json.dump({"step": step}, open(ckpt + ".tmp", "w"))
            os.replace(ckpt + ".tmp", ckpt)
    final = loss_at(n, trial["tokens"], tid)
    json.dump({"n_params": n, "eval_loss": final}, open(os.path.join(out, "result.json"), "w"))
    log(trial["settings"]["log"], "end", tid, worker=os.getppid())
""")

FUNCTION = COMMON + textwrap.dedent("""
    from scalesweep import Outcome

    def size(target_n):
        width = max(4, round(target_n ** 0.5))
        return {"width": width}, width * width

    def train(trial, ctx):
        n, tid = trial.model["width"] ** 2, trial.trial_id
        log(trial.settings["log"], "start", tid)
        saved = ctx.load_checkpoint()
        step = json.loads(saved)["step"] if saved else 0
        for step in range(step + 1, 9):
            time.sleep(0.04)
            log(trial.settings["log"], "step", tid, step)
            tokens = trial.tokens * step // 8
            ctx.report(step, tokens, train_loss=loss_at(n, tokens, tid))
            ctx.save_checkpoint(json.dumps({"step": step}).encode())
        log(trial.settings["log"], "end", tid)
        return Outcome(eval_loss=loss_at(n, trial.tokens, tid), n_params=n)
""")

BUDGETS = [1e15, 1e16, 1e17]
SIZES = [1e6, 3e6, 1e7, 3e7]


def _spec(tmp_path, path: str) -> dict:
    """The sweep of a lab's trainer of kind ``path``, written beside its spec; it logs to invocations.log."""
    spec = {"name": f"byo-{path}", "results": str(tmp_path / "results"),
            "sweep": {"kind": "isoflop", "budgets": BUDGETS, "model_sizes": SIZES},
            "train": {"lr": 1e-3, "batch_tokens": 1024, "checkpoint_every_s": 0},
            "resources": {"cpus": 1, "max_retries": 1}, "fit": {"target_compute": 1e20}}
    if path == "command":
        (tmp_path / "train.py").write_text(COMMAND)
        spec["trainer"] = {"command": f"{sys.executable} train.py", "settings": {"log": str(tmp_path / "invocations.log")}}
        widths = [round(s ** 0.5) for s in SIZES]
        spec["model"] = {"ladder": [{"name": f"w{w}", "n_params": w * w, "settings": {"width": w}} for w in widths]}
    else:
        (tmp_path / "hidden_law_lab").mkdir()
        (tmp_path / "hidden_law_lab" / "__init__.py").write_text("")
        (tmp_path / "hidden_law_lab" / "trainer.py").write_text(FUNCTION)
        spec["trainer"] = {"function": "hidden_law_lab.trainer:train", "settings": {"log": str(tmp_path / "invocations.log")}}
        spec["model"] = {"size": "hidden_law_lab.trainer:size"}
    return spec


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except (ProcessLookupError, FileNotFoundError):
        return False


@pytest.mark.parametrize("path", ["command", "function"])
def test_a_labs_trainer_killed_mid_sweep_resumes_trains_each_point_once_and_fits_its_law(ray_cluster, tmp_path, path):
    import ray

    spec = _spec(tmp_path, path)
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(spec))
    log = tmp_path / "invocations.log"
    env = dict(os.environ, PYTHONPATH=str(ROOT), RAY_AUTH_MODE=os.environ.get("RAY_AUTH_MODE", "token"))
    # Run from elsewhere: the trainer is found beside the spec, not in the working directory.
    cmd = [sys.executable, "-m", "orchestrator.cli", "run", str(tmp_path / "spec.yaml"),
           "--address", ray.get_runtime_context().gcs_address]
    trials_dir = tmp_path / "results" / spec["name"] / "trials"
    driver = subprocess.Popen(cmd, env=env, cwd=str(ROOT / "tests"), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                              text=True)
    deadline = time.time() + 120
    while time.time() < deadline and len(list(trials_dir.glob("*.parquet")) if trials_dir.exists() else []) < 4:
        time.sleep(0.05)
    driver.send_signal(signal.SIGKILL)
    _, err = driver.communicate(timeout=60)
    assert log.exists(), err[-3000:]
    events = [line.split() for line in log.read_text().splitlines()]
    started = {pid for event, _, pid, _, _ in events if event == "start"}
    workers = {w for event, _, _, _, w in events if event == "start"}
    # The commands of the killed driver's trials end with it, and so do its Ray workers (Ray ends a
    # dead job's workers): one still committing as the new driver starts would race it.
    deadline = time.time() + 60  # (it waits only as long as they live)
    while time.time() < deadline and any(_alive(int(p)) for p in started | workers):
        time.sleep(0.2)
    assert not [p for p in started if _alive(int(p))], "a trainer process outlived the killed driver"
    assert not [w for w in workers if _alive(int(w))], "a Ray worker outlived the killed driver"

    done = subprocess.run(cmd, env=env, cwd=str(ROOT / "tests"), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    trials = load_trials(str(tmp_path / "results" / spec["name"]))
    assert len(trials) == len(BUDGETS) * len(SIZES) and set(trials["status"]) == {"completed"}
    events = [line.split() for line in log.read_text().splitlines()]
    assert {tid for event, tid, *_ in events if event == "end"} == set(trials["trial_id"])
    # Each point trained once: every step of it trained, none twice but the one in flight at the
    # kill, and none after the trainer's first end. (A trainer killed after it ended but before its
    # row was committed is run again, and finds its last checkpoint: it trains nothing.)
    trained = Counter((tid, int(step)) for event, tid, _, step, _ in events if event == "step")
    assert all({s for (t, s) in trained if t == tid} == set(range(1, STEPS + 1)) for tid in trials["trial_id"])
    assert max(trained.values()) <= 2, trained
    assert sum(n - 1 for n in trained.values()) <= len(started), trained
    ended: set[str] = set()
    for event, tid, *_ in events:
        assert not (event == "step" and tid in ended), f"{tid} trained a step after its trainer ended"
        ended |= {tid} if event == "end" else set()
    assert "a (N_opt" in done.stdout
    line = next(x for x in done.stdout.splitlines() if x.strip().startswith("a (N_opt"))
    a, lo80, hi80, lo95, hi95 = (float(v) for v in line.replace("[", " ").replace("]", " ").replace(",", " ").split()[4:9])
    print(line)  # shown with pytest -rP
    assert lo95 <= 0.5 <= hi95 and abs(a - 0.5) < 0.02, line  # the hidden law's frontier exponent
    steps = json.loads(trials.iloc[0][["n_params"]].to_json())  # rows commit the trainer's N
    assert steps["n_params"] in {round(s ** 0.5) ** 2 for s in SIZES}


EXAMPLES = ROOT / "examples"


@pytest.mark.parametrize("example", ["python_trainer", "command_trainer"])
def test_the_examples_run_end_to_end_on_ray(ray_cluster, tmp_path, example):
    """Each example's own spec, with smaller budgets, as a user runs it: trials on Ray, rows, a fit."""
    from orchestrator import load_steps
    from orchestrator.spec import load_spec
    from orchestrator.sweep import run_sweep

    spec = yaml.safe_load((EXAMPLES / example / "sweep.yaml").read_text())
    spec["sweep"] = {"kind": "isoflop", "budgets": [2e9, 6e9], "model_sizes": [1e4, 3.3e4]}
    spec["results"] = str(tmp_path / "results")
    path = EXAMPLES / example / f".test-{os.getpid()}.yaml"  # beside the example: its directory is the trainer's
    path.write_text(yaml.safe_dump(spec))
    try:
        out = run_sweep(load_spec(path), write_report=False)
    finally:
        path.unlink()
    assert out.failed == 0 and out.diverged == 0 and out.n_trials == 4, out.fit_error
    trials = load_trials(out.results)
    assert set(trials["status"]) == {"completed"} and (trials["eval_loss"] < 5.6).all()  # below ln 256: it learned
    steps = load_steps(out.results)
    assert set(steps["trial_id"]) == set(trials["trial_id"])
    if example == "python_trainer":  # a column of the trainer's own, as a step column
        assert steps["grad_scale"].notna().any()
