"""The command trainer's contract at run time, with tiny shell scripts: what a command that breaks
it gets (a FAILED row naming the file, the line and its last stderr lines), its own step columns,
its rows across a resume, and its process group ended with it."""

import json
import os
import time

import pytest

from orchestrator.errors import UserError
from orchestrator.planning.trials import TrialFactory
from orchestrator.spec import parse_spec
from workers.run import run_trial
from workers.store import ResultStore, TrialStatus

GOOD_ROW = '{"step": 1, "tokens": 100, "train_loss": 3.0}'
RESULT = '{"n_params": 1000, "eval_loss": 2.5}'


def trial(tmp_path, script: str, trainer: dict | None = None):
    """The trial of a one-rung sweep whose trainer runs ``script`` with sh in tmp_path."""
    (tmp_path / "train.sh").write_text(script)
    spec = parse_spec({"name": "cmd", "results": str(tmp_path / "results"),
                       "trainer": trainer or {"command": "sh train.sh {trial_json}", "workdir": str(tmp_path)},
                       "model": {"ladder": [{"name": "tiny", "n_params": 1000, "settings": {"width": 4}}]},
                       "sweep": {"kind": "grid", "model_sizes": [1000], "tokens": [1e4]},
                       "train": {"batch_tokens": 100}})
    return TrialFactory(spec).make(1000, 1e4, 0.0, 0, "test")


def out(line: str) -> str:
    return f"echo '{line}' >> \"$SCALESWEEP_OUTPUT/metrics.jsonl\"\n"


def result(text: str = RESULT) -> str:
    return f"echo '{text}' > \"$SCALESWEEP_OUTPUT/result.json\"\n"


@pytest.mark.parametrize("script, message", [
    (out(GOOD_ROW), "result.json: missing (the command exited 0 without writing it"),
    (out(GOOD_ROW) + "echo 'loading the data' >&2\necho 'CUDA out of memory' >&2\nexit 3\n",
     "trainer.command exited with status 3: sh train.sh {trial_json}\nlast stderr lines of sh train.sh "
     "{trial_json}:\n  | loading the data\n  | CUDA out of memory"),
    (out(GOOD_ROW) + out("step 2 loss 2.9") + result(), "metrics.jsonl:2: not a JSON object"),
    (out('{"step": 2, "train_loss": 2.9}') + result(), "metrics.jsonl:1: no tokens"),
    (out('{"step": 2, "tokens": 200}') + result(), "metrics.jsonl:1: no train_loss or eval_loss"),
    (out('{"step": 2, "tokens": 200, "train_loss": "low"}') + result(), "metrics.jsonl:1: train_loss='low'"),
    (out('{"step": 2, "tokens": 200, "train_loss": 2.0, "note": "x"}') + result(), "note='x' (expected a number"),
    (out(GOOD_ROW) + result('{"eval_loss": 2.5}'), "result.json: no n_params"),
    (out(GOOD_ROW) + result("not json"), "result.json: not JSON"),
    (out(GOOD_ROW) + result('{"n_params": -4, "eval_loss": 2.5}'), "n_params=-4 (expected a positive whole number)"),
    (result(), "the trainer reported no progress rows"),
    ("kill -9 $$\n", "trainer.command killed by signal 9"),
])
def test_a_command_that_breaks_the_contract_is_a_failed_row_naming_what(tmp_path, script, message):
    cfg = trial(tmp_path, script)
    r = run_trial(cfg)
    assert r.status is TrialStatus.FAILED and message in r.error, r.error
    [row] = ResultStore(cfg.results).read_table("trials").to_pylist()
    assert row["status"] == "failed" and message in row["error"]


def test_a_diverged_command_and_its_own_step_columns(tmp_path):
    script = out('{"step": 1, "tokens": 100, "train_loss": 3.0, "grad_norm": 0.5, "wall_s": 1.5, "energy_j": 12.5}') + \
        out('{"step": 2, "tokens": 200, "train_loss": NaN, "grad_norm": 7.0}') + result('{"n_params": 1000, "eval_loss": null}')
    cfg = trial(tmp_path, script)
    r = run_trial(cfg)
    assert r.status is TrialStatus.DIVERGED, r.error
    store = ResultStore(cfg.results)
    assert store.read_table("trials").column("step_columns").to_pylist() == ["grad_norm"]
    steps = store.read_table("steps").to_pylist()
    assert [s["grad_norm"] for s in steps] == [0.5, 7.0] and steps[0]["wall_s"] == 1.5  # its own clock
    assert [s["energy_j"] for s in steps] == [12.5, None]  # its own meter where it has one; none read after it ended
    from orchestrator.results.sql import query

    assert query(cfg.results, "select max(grad_norm) as g from steps")["g"].tolist() == [7.0]  # queried by name


def test_a_resumed_command_finds_its_rows_and_a_row_repeated_replaces_the_earlier(tmp_path):
    # First attempt: rows 1-2, a checkpoint, then a line cut off by the kill. Second: resumes at 2.
    script = """
if [ -f "$SCALESWEEP_CHECKPOINT_DIR/state" ]; then
  echo '{"step": 2, "tokens": 200, "train_loss": 2.5}' >> "$SCALESWEEP_OUTPUT/metrics.jsonl"
  echo '{"step": 3, "tokens": 300, "train_loss": 2.4, "eval_loss": 2.45}' >> "$SCALESWEEP_OUTPUT/metrics.jsonl"
  echo '{"n_params": 1000, "eval_loss": 2.45}' > "$SCALESWEEP_OUTPUT/result.json"
  exit 0
fi
echo '{"step": 1, "tokens": 100, "train_loss": 3.0}' >> "$SCALESWEEP_OUTPUT/metrics.jsonl"
echo '{"step": 2, "tokens": 200, "train_loss": 2.6}' >> "$SCALESWEEP_OUTPUT/metrics.jsonl"
echo 1 > "$SCALESWEEP_CHECKPOINT_DIR/state"
printf '{"step": 3, "tok' >> "$SCALESWEEP_OUTPUT/metrics.jsonl"
kill -9 $$
"""
    cfg = trial(tmp_path, script)
    assert run_trial(cfg).status is TrialStatus.FAILED
    r = run_trial(cfg)
    assert r.status is TrialStatus.COMPLETED and r.eval_loss == 2.45, r.error
    steps = ResultStore(cfg.results).read_table("steps").to_pylist()
    assert [(s["step"], s["train_loss"]) for s in steps] == [(1, 3.0), (2, 2.5), (3, 2.4)]
    assert not (tmp_path / "results" / "cmd" / "checkpoints" / f"{cfg.trial_id}.run").exists()  # committed: gone


def test_the_trial_file_placeholders_and_environment(tmp_path):
    script = ('cp "$1" "$SCALESWEEP_OUTPUT/../../seen.json"\necho "$2 $3 $PWD" > "$SCALESWEEP_OUTPUT/../../argv"\n'
              'echo "$4 $5" > "$SCALESWEEP_OUTPUT/../../rest"\n' + out(GOOD_ROW) + result())
    cfg = trial(tmp_path, script, {"command": ["sh", "train.sh", "{trial_json}", "{n_params}", "{lr:.2g}",
                                               "--width={model.width}", "{settings.dataset}"],
                                   "workdir": str(tmp_path), "settings": {"dataset": "fineweb"}})
    assert run_trial(cfg).status is TrialStatus.COMPLETED
    run_dir = tmp_path / "results" / "cmd" / "checkpoints"
    seen = json.loads((run_dir / "seen.json").read_text())
    assert seen["trial_id"] == cfg.trial_id and seen["n_params"] == 1000 and seen["model"] == {"width": 4}
    assert seen["settings"] == {"dataset": "fineweb"} and seen["tokens"] == 10_000 and seen["steps"] == 100
    assert seen["schedule"]["kind"] == "cosine" and seen["size"] == "tiny" and seen["role"] == "point"
    assert (run_dir / "argv").read_text().split() == ["1000", "0.006", str(tmp_path)]
    assert seen_argv(run_dir) == ["--width=4", "fineweb"]
    with pytest.raises(UserError, match=r"placeholder \{model.depth\}: model.ladder\[0\].settings has no 'depth'"):
        trial(tmp_path, script, {"command": ["sh", "train.sh", "{model.depth}"], "workdir": str(tmp_path)})
    with pytest.raises(UserError, match=r"placeholder \{settings.data\}: trainer.settings has no 'data'"):
        trial(tmp_path, script, {"command": ["sh", "train.sh", "{settings.data}"], "workdir": str(tmp_path)})


def seen_argv(run_dir) -> list[str]:
    return (run_dir / "rest").read_text().split()


def test_what_the_command_leaves_running_in_its_group_is_ended(tmp_path):
    script = "sleep 60 &\necho $! > \"$SCALESWEEP_OUTPUT/../../child\"\n" + out(GOOD_ROW) + result()
    cfg = trial(tmp_path, script)
    assert run_trial(cfg).status is TrialStatus.COMPLETED
    pid = int((tmp_path / "results" / "cmd" / "checkpoints" / "child").read_text())
    deadline = time.time() + 5
    while time.time() < deadline and os.path.exists(f"/proc/{pid}") and "Z" not in _state(pid):
        time.sleep(0.05)
    assert not os.path.exists(f"/proc/{pid}") or "Z" in _state(pid)


def _state(pid: int) -> str:
    try:
        return open(f"/proc/{pid}/stat").read().split(")")[-1].split()[0]
    except OSError:
        return "Z"


def test_a_function_trainer_that_returns_no_outcome_is_a_failed_row(tmp_path, monkeypatch):
    (tmp_path / "nolab.py").write_text("def train(trial, ctx):\n    ctx.report(1, 100, train_loss=3.0)\n")
    cfg = trial(tmp_path, "", {"function": "nolab:train", "workdir": str(tmp_path)})
    r = run_trial(cfg)
    assert r.status is TrialStatus.FAILED and "expected an Outcome or a mapping" in r.error, r.error
