"""Run reuse and object storage for a lab's trainers: a Python function that saves and loads its
stem's state through the context, swept with a wsd schedule, computes each point's loss exactly as
trained whole and spends less; a command resumes from its checkpoint on object storage."""

import json
import sys

import pytest

from orchestrator.running.executor import InlineExecutor
from orchestrator.spec import load_spec, parse_spec
from orchestrator.sweep import run_sweep
from workers.run import run_trial
from workers.flops import train_flops
from workers.store import ResultStore, TrialStatus
from orchestrator.planning.trials import TrialFactory

# A deterministic "training": the state follows the schedule's learning rates step by step, so a
# branch that starts from its stem's state ends exactly where the whole run does.
LAB = '''
import json
from scalesweep import Outcome, lr_at

def train(trial, ctx):
    state, step = 0.0, 0
    if trial.role == "stem" or trial.start_step:
        want = trial.steps - 1 if trial.role == "stem" else trial.start_step
        for s in reversed([s for s in ctx.stem_steps() if s <= want]):
            data = ctx.load_stem(s)
            if data is not None:
                state, step = json.loads(data)["state"], s
                break
    stops = set(trial.stops) if trial.role == "stem" else ({trial.start_step} if step < trial.start_step else set())
    for k in range(step, trial.steps):
        state = state * 0.999 + lr_at(trial, k)
        if (k + 1) % 10 == 0 or k + 1 == trial.steps:
            ctx.report(k + 1, (k + 1) * trial.batch_tokens, train_loss=2 + 1 / (1 + state))
        if k + 1 in stops:
            ctx.save_stem(k + 1, json.dumps({"state": state}).encode())
    return Outcome(eval_loss=2 + 1 / (1 + state) + 100 / trial.n_params ** 0.3, n_params=trial.n_params)
'''


# The same training as a command, through $SCALESWEEP_STEM_DIR (one file <step>.pt per state).
COMMAND = '''
import json, os
from scalesweep import Trial, lr_at

t = json.load(open(os.environ["SCALESWEEP_TRIAL"]))
trial = Trial(**t)
stems, out = os.environ["SCALESWEEP_STEM_DIR"], os.environ["SCALESWEEP_OUTPUT"]
state, step = 0.0, 0
if t["role"] == "stem" or t["start_step"]:
    want = t["steps"] - 1 if t["role"] == "stem" else t["start_step"]
    have = sorted(int(f[:-3]) for f in os.listdir(stems) if f.endswith(".pt") and f[:-3].isdigit() and int(f[:-3]) <= want)
    if have:
        step = have[-1]
        state = json.load(open(f"{stems}/{step}.pt"))["state"]
stops = set(t["stops"]) if t["role"] == "stem" else ({t["start_step"]} if step < t["start_step"] else set())
with open(f"{out}/metrics.jsonl", "a") as m:
    for k in range(step, t["steps"]):
        state = state * 0.999 + lr_at(trial, k)
        if (k + 1) % 10 == 0 or k + 1 == t["steps"]:
            m.write(json.dumps({"step": k + 1, "tokens": (k + 1) * t["batch_tokens"], "train_loss": 2 + 1 / (1 + state)}) + "\\n")
        if k + 1 in stops:
            json.dump({"state": state}, open(f"{stems}/.{k + 1}.tmp", "w"))
            os.replace(f"{stems}/.{k + 1}.tmp", f"{stems}/{k + 1}.pt")
json.dump({"n_params": t["n_params"], "eval_loss": 2 + 1 / (1 + state) + 100 / t["n_params"] ** 0.3},
          open(f"{out}/result.json", "w"))
'''


def _sweep(tmp_path, name: str, kind: str = "function", **train):
    (tmp_path / "toylab.py").write_text(LAB)
    (tmp_path / "toylab_cmd.py").write_text(COMMAND)
    trainer = {"function": "toylab:train"} if kind == "function" else {"command": f"{sys.executable} toylab_cmd.py"}
    spec = {"name": name, "results": str(tmp_path / "results"), "trainer": trainer,
            "model": {"ladder": [{"name": "s", "n_params": 10_000, "settings": {}}]},
            "sweep": {"kind": "grid", "model_sizes": [10_000], "tokens": [20_000, 40_000, 80_000]},
            "train": {"batch_tokens": 100, "lr": 1e-3, "schedule": "wsd", **train},
            "resources": {"flops_per_s": 1e15}, "fit": {"target_compute": 1e12}}
    path = tmp_path / f"{name}.yaml"
    path.write_text(json.dumps(spec))  # JSON is YAML
    return load_spec(path)


@pytest.mark.parametrize("kind", ["function", "command"])
def test_a_labs_trainer_branches_off_its_stems_exactly_and_spends_less(tmp_path, kind):
    spec = _sweep(tmp_path, "reuse", kind)
    out = run_sweep(spec, executor_factory=lambda: InlineExecutor(run_trial), write_report=False)
    assert out.trained == 3 and out.failed == 0
    rows = ResultStore(spec.sweep_dir).read_table("trials").to_pandas()
    points, stems = rows[rows["role"] == "point"], rows[rows["role"] == "stem"]
    assert len(points) == 3 and len(stems) >= 1 and set(points["parent_id"]) == set(stems["parent_id"])
    # the stem trained once up to the longest branch point; each branch its cooldown only
    assert stems["flops_spent"].sum() + points["flops_spent"].sum() < points["flops"].sum() * 0.8
    assert ResultStore(spec.sweep_dir).list_names("checkpoints", dirs=True) == []
    whole_spec = _sweep(tmp_path, "whole", kind, reuse=False)
    run_sweep(whole_spec, executor_factory=lambda: InlineExecutor(run_trial), write_report=False)
    whole = ResultStore(whole_spec.sweep_dir).read_table("trials").to_pandas().set_index("trial_id")
    for _, r in points.iterrows():  # the same trial ids, the same losses, bit for bit
        assert r["eval_loss"] == whole.loc[r["trial_id"], "eval_loss"]
        assert r["flops"] == train_flops(10_000, r["tokens"])
    steps = ResultStore(spec.sweep_dir).read_table("steps").to_pandas()
    longest = points.loc[points["tokens"].idxmax(), "trial_id"]
    if kind == "function":  # the stem's rows come with a branch through the context (a command's do not)
        assert steps[steps["trial_id"] == longest]["step"].min() == 10


def test_a_command_resumes_from_its_checkpoint_on_object_storage(tmp_path, bucket):
    (tmp_path / "train.sh").write_text("""
if [ -f "$SCALESWEEP_CHECKPOINT_DIR/state" ]; then
  echo '{"step": 2, "tokens": 200, "train_loss": 2.5}' >> "$SCALESWEEP_OUTPUT/metrics.jsonl"
  echo '{"n_params": 1000, "eval_loss": 2.4}' > "$SCALESWEEP_OUTPUT/result.json"
  exit 0
fi
echo '{"step": 1, "tokens": 100, "train_loss": 3.0}' >> "$SCALESWEEP_OUTPUT/metrics.jsonl"
echo 1 > "$SCALESWEEP_CHECKPOINT_DIR/state"
exit 1
""")
    spec = parse_spec({"name": "remote", "results": bucket,
                       "trainer": {"command": "sh train.sh", "workdir": str(tmp_path)},
                       "model": {"ladder": [{"name": "tiny", "n_params": 1000}]},
                       "sweep": {"kind": "grid", "model_sizes": [1000], "tokens": [1e4]}, "train": {"batch_tokens": 100}})
    cfg = TrialFactory(spec).make(1000, 1e4, 0.0, 0, "test")
    assert run_trial(cfg).status is TrialStatus.FAILED  # its checkpoint and rows uploaded for the retry
    store = ResultStore(cfg.results)
    assert store.read_bytes(f"checkpoints/{cfg.trial_id}.run.tar") is not None
    r = run_trial(cfg)
    assert r.status is TrialStatus.COMPLETED and r.eval_loss == 2.4, r.error
    assert [s["step"] for s in store.read_table("steps").to_pylist()] == [1, 2]
    assert store.read_bytes(f"checkpoints/{cfg.trial_id}.run.tar") is None  # committed: gone

    store.write_bytes(f"checkpoints/{cfg.trial_id}.run.tar", b"not a tar")  # a damaged copy: warned about, not fatal
    store.delete(f"trials/{cfg.trial_id}.parquet")
    again = run_trial(cfg)
    assert again.status is TrialStatus.FAILED and "exited with status 1" in again.error  # started over, not stuck


def test_a_failed_command_trials_workspace_outlives_the_end_of_a_wsd_sweep(tmp_path):
    from orchestrator.running.executor import InlineExecutor as Inline
    from orchestrator.running.reuse import ReuseExecutor

    store = ResultStore(str(tmp_path / "sweep"))
    store.write_bytes("checkpoints/0123456789abcdef.run/checkpoint/state", b"1")  # kept for the trial's retry
    store.write_bytes("checkpoints/fedcba9876543210/20.pt", b"stem state")  # a stem nothing needs any more
    ReuseExecutor(Inline(run_trial), store, False).close(complete=True)
    assert store.list_names("checkpoints", dirs=True) == ["0123456789abcdef.run"]
