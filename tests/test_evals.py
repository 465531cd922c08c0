"""Task evaluations in trials (workers.evals): the spec's evals: section, rows from the GPT, a
lab's command and the simulator, the evals table (query, status), and bad input as one line."""

import json
import subprocess
import sys

import numpy as np
import pytest

from orchestrator.errors import UserError
from orchestrator.planning.trials import TrialFactory
from orchestrator.spec import load_spec, parse_spec
from tests.conftest import tiny_spec_dict
from workers.run import run_trial
from workers.store import ResultStore, TrialStatus

ITEMS = [{"context": "def f(x):\n    return (x + (1", "choices": ["))", ")", ")))", "]"], "gold": 0},
         {"query": "import o", "choices": ["s", "x"], "gold": 0},
         {"ctx": "for i in ra", "endings": ["nge(", "ndom("], "label": 0}] * 10


def task_file(path, items=ITEMS):
    path.write_text("\n".join(json.dumps(i) for i in items) + "\n")
    return path


def gpt_trial(tmp_path, cache_dir, **evals):
    spec = parse_spec(tiny_spec_dict(str(tmp_path / "results"), evals=evals) if evals else
                      tiny_spec_dict(str(tmp_path / "results")))
    return TrialFactory(spec, cache_dir=cache_dir).make(4e3, 256 * 30, 0.0, 0, "test")


def test_gpt_trial_scores_its_tasks_at_each_evaluation_and_ids_ignore_evals(tmp_path, cache_dir):
    f = task_file(tmp_path / "mc.jsonl")
    cfg = gpt_trial(tmp_path, cache_dir, tasks=[str(f)])
    assert cfg.trial_id == gpt_trial(tmp_path, cache_dir).trial_id  # evaluation is not what a trial trains
    r = run_trial(cfg)
    assert r.status is TrialStatus.COMPLETED, r.error
    ev = ResultStore(cfg.results).read_table("evals").to_pandas()
    steps = ResultStore(cfg.results).read_table("steps").to_pandas()
    assert sorted(ev["step"]) == sorted(steps.dropna(subset=["eval_loss"])["step"])  # every held-out evaluation
    assert set(ev["task"]) == {"mc"} and (ev["n_items"] == 30).all()
    assert ev["chance"].iloc[0] == pytest.approx((1 / 4 + 1 / 2 + 1 / 2) / 3)
    assert ((ev["acc"] >= 0) & (ev["acc"] <= 1)).all() and (ev["task_bpb"] > 0).all()
    assert ev.sort_values("step")["task_bpb"].iloc[-1] < ev.sort_values("step")["task_bpb"].iloc[0]  # it learns


def test_every_end_scores_the_final_evaluation_only(tmp_path, cache_dir):
    cfg = gpt_trial(tmp_path, cache_dir, tasks=[str(task_file(tmp_path / "mc.jsonl"))], every="end")
    assert run_trial(cfg).status is TrialStatus.COMPLETED
    ev = ResultStore(cfg.results).read_table("evals").to_pandas()
    assert list(ev["step"]) == [30]


def test_task_files_are_relative_to_the_spec_and_bad_ones_are_one_line(tmp_path, cache_dir):
    task_file(tmp_path / "mc.jsonl")
    spec_path = tmp_path / "spec.yaml"
    spec_path.write_text(json.dumps(tiny_spec_dict(str(tmp_path / "results"), evals={"tasks": ["mc.jsonl"]})))
    spec = load_spec(spec_path)
    assert spec.evals.tasks[0].file == str(tmp_path / "mc.jsonl")
    TrialFactory(spec, cache_dir=cache_dir)  # reads the file: fine
    (tmp_path / "mc.jsonl").write_text(json.dumps(ITEMS[0]) + "\n{not json\n")
    with pytest.raises(UserError, match=r"mc.jsonl:2: not a JSON object"):
        TrialFactory(load_spec(spec_path), cache_dir=cache_dir)
    (tmp_path / "mc.jsonl").write_text(json.dumps(dict(ITEMS[0], gold=7)) + "\n")
    with pytest.raises(UserError, match=r"mc.jsonl:1: gold index 7 is out of range"):
        TrialFactory(load_spec(spec_path), cache_dir=cache_dir)
    (tmp_path / "mc.jsonl").write_text(json.dumps(dict(ITEMS[0], choices=["))"], gold=0)) + "\n")
    with pytest.raises(UserError, match=r"mc.jsonl:1: 1 choice\(s\); a multiple-choice item needs at least 2"):
        TrialFactory(load_spec(spec_path), cache_dir=cache_dir)


def test_bad_evals_sections_are_refused_at_load(tmp_path, cache_dir):
    with pytest.raises(UserError, match="evals.tokenizer: data.tokens is a token corpus"):
        parse_spec(tiny_spec_dict(str(tmp_path), data={"tokens": "x.npy", "builtin": None},
                                  evals={"tasks": ["brackets"]}))
    with pytest.raises(UserError, match="evals.*tasks"):
        parse_spec(tiny_spec_dict(str(tmp_path), evals={"tasks": []}))
    with pytest.raises(UserError, match="named twice"):
        parse_spec(tiny_spec_dict(str(tmp_path), evals={"tasks": ["a.jsonl", "b/a.jsonl"]}))
    spec = parse_spec(tiny_spec_dict(str(tmp_path), evals={"tasks": ["no_such_task"]}))
    with pytest.raises(UserError, match="unknown built-in task 'no_such_task'"):
        TrialFactory(spec, cache_dir=cache_dir)


def test_a_token_corpus_is_scored_through_its_tokenizer(tmp_path, cache_dir):
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    text = "def f(x):\n    return (x + (1))\nimport os\nfor i in range(3):\n    pass\n" * 200
    tok = Tokenizer(models.BPE(unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.train_from_iterator([text], trainers.BpeTrainer(vocab_size=300, special_tokens=["[UNK]"],
                                                        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tok.save(str(tmp_path / "tokenizer.json"))
    ids = np.asarray(tok.encode(text).ids * 4, dtype=np.uint16)
    np.save(tmp_path / "tokens.npy", ids)
    spec = parse_spec(tiny_spec_dict(str(tmp_path / "results"),
                                     data={"builtin": None, "tokens": str(tmp_path / "tokens.npy"), "vocab_size": 300},
                                     evals={"tasks": [str(task_file(tmp_path / "mc.jsonl"))],
                                            "tokenizer": str(tmp_path / "tokenizer.json")}))
    cfg = TrialFactory(spec, cache_dir=cache_dir).make(4e3, 256 * 20, 0.0, 0, "test")
    r = run_trial(cfg)
    assert r.status is TrialStatus.COMPLETED, r.error
    ev = ResultStore(cfg.results).read_table("evals").to_pandas()
    assert len(ev) == 3 and (ev["task_bpb"] > 0).all()
    (tmp_path / "bad.json").write_text("{}")
    bad = parse_spec(tiny_spec_dict(str(tmp_path / "results"),
                                    data={"builtin": None, "tokens": str(tmp_path / "tokens.npy"), "vocab_size": 300},
                                    evals={"tasks": ["mc.jsonl"], "tokenizer": str(tmp_path / "bad.json")}))
    with pytest.raises(UserError, match="evals.tokenizer: cannot read .*bad.json"):
        TrialFactory(bad, cache_dir=cache_dir)


def command_trial(tmp_path, lines: list[str]):
    evals = "".join(f"echo '{ln}' >> \"$SCALESWEEP_OUTPUT/evals.jsonl\"\n" for ln in lines)
    (tmp_path / "train.sh").write_text(
        "echo '{\"step\": 1, \"tokens\": 100, \"train_loss\": 3.0}' >> \"$SCALESWEEP_OUTPUT/metrics.jsonl\"\n"
        + evals + "echo '{\"n_params\": 1000, \"eval_loss\": 2.5}' > \"$SCALESWEEP_OUTPUT/result.json\"\n")
    spec = parse_spec({"name": "cmd", "results": str(tmp_path / "results"),
                       "trainer": {"command": "sh train.sh", "workdir": str(tmp_path)},
                       "model": {"ladder": [{"name": "tiny", "n_params": 1000, "settings": {"width": 4}}]},
                       "sweep": {"kind": "grid", "model_sizes": [1000], "tokens": [1e4]},
                       "train": {"batch_tokens": 100}})
    return TrialFactory(spec).make(1000, 1e4, 0.0, 0, "test")


@pytest.mark.parametrize("lines, outcome", [
    (['{"step": 1, "tokens": 100, "task": "arc", "task_bpb": 1.2, "acc": 0.3, "n_items": 50, "chance": 0.25}',
      '{"step": 1, "tokens": 100, "task": "arc", "task_bpb": 1.1, "acc": 0.35}'], None),
    (['{"step": 1, "tokens": 100, "task": "arc", "acc": 0.3}'], "evals.jsonl:1: no task_bpb"),
    (['{"step": 1, "tokens": 100, "task": "arc", "task_bpb": 1.0, "acc": "high"}'], "evals.jsonl:1: acc='high'"),
    (['{"step": 1, "tokens": 100, "task": "arc", "task_bpb": 1.0, "acc": 0.3, "f1": 0.2}'],
     "evals.jsonl:1: unknown field 'f1'"),
    (["not json"], "evals.jsonl:1: not a JSON object"),
])
def test_command_evals_jsonl(tmp_path, lines, outcome):
    cfg = command_trial(tmp_path, lines)
    r = run_trial(cfg)
    if outcome is not None:
        assert r.status is TrialStatus.FAILED and outcome in r.error, r.error
        return
    assert r.status is TrialStatus.COMPLETED, r.error
    [row] = ResultStore(cfg.results).read_table("evals").to_pylist()
    assert (row["task"], row["task_bpb"], row["acc"]) == ("arc", 1.1, 0.35)  # the later line for (step, task) wins


def test_simulated_tasks_query_and_status_list_what_finished_trials_lack(tmp_path):
    from orchestrator.cli import main
    from orchestrator.results.sql import query
    from orchestrator.running.executor import InlineExecutor
    from orchestrator.sweep import run_sweep

    def spec(tasks):
        return parse_spec({"name": "sim", "trainer": "simulated", "results": str(tmp_path),
                           "world": {"law": {"E": 1.69, "A": 406.4, "B": 410.7, "alpha": 0.34, "beta": 0.28},
                                     "tasks": tasks, "task_checkpoints": 5},
                           "sweep": {"kind": "grid", "model_sizes": [1e8, 4e8], "tokens": [2e9, 8e9]}})

    run_sweep(spec(2), executor_factory=lambda: InlineExecutor(run_trial), write_report=False)
    out = query(str(tmp_path / "sim"), "select task, count(*) n, min(step) s from evals group by task order by task")
    assert list(out["task"]) == ["easy", "medium"] and (out["n"] == 4 * 5).all()
    # Adding a task trains nothing again (evaluation is not in the ids): the finished trials lack it.
    run_sweep(spec(3), executor_factory=lambda: InlineExecutor(run_trial), write_report=False)
    assert len(ResultStore(str(tmp_path / "sim")).read_table("trials")) == 4
    res = subprocess.run([sys.executable, "-m", "orchestrator.cli", "status", str(tmp_path / "sim"), "--json"],
                         capture_output=True, text=True)
    status = json.loads(res.stdout)
    assert status["tasks"]["planned"] == ["easy", "medium", "hard"]
    assert len(status["tasks"]["lacking"]) == 4 and all(v == ["hard"] for v in status["tasks"]["lacking"].values())
    assert main(["status", str(tmp_path / "sim")]) == 0


def test_context_keeps_task_rows_in_its_checkpoints(tmp_path):
    from workers.trainers.interface import Context, Trial

    store = ResultStore(str(tmp_path))
    trial = Trial(trial_id="abc", seed=0, n_params=10, tokens=100, lr=1e-3, batch_tokens=10, steps=10, model={},
                  eval_tasks=("t",), evals={"tasks": [{"name": "t", "builtin": "brackets"}]})
    ctx = Context(trial, store)
    ctx.report_task(5, 50, "t", task_bpb=1.0, acc=0.5)
    ctx.save_checkpoint(b"state", 50)
    again = Context(trial, store)
    assert again.load_checkpoint() == b"state"
    assert [(r["step"], r["task"], r["acc"]) for r in again.evals] == [(5, "t", 0.5)]
    assert again.tasks_due(final=False) and not Context(Trial(**{**trial.__dict__, "eval_tasks": ()}), store).tasks_due(True)


def test_fit_and_report_of_a_sweep_with_tasks_predict_accuracy_at_the_target(tmp_path):
    from orchestrator.cli import main
    from orchestrator.report.downstream import downstream_for
    from orchestrator.report.page import write_report
    from orchestrator.results import open_results
    from orchestrator.running.executor import InlineExecutor
    from orchestrator.sweep import run_sweep

    spec = parse_spec({"name": "sim", "trainer": "simulated", "results": str(tmp_path),
                       "world": {"law": {"E": 1.69, "A": 406.4, "B": 410.7, "alpha": 0.34, "beta": 0.28},
                                 "tasks": 2, "task_checkpoints": 6},
                       "sweep": {"kind": "grid", "model_sizes": [1e8, 2e8, 4e8, 8e8], "tokens": [2e9, 5e9, 1.2e10]},
                       "fit": {"target_compute": 1e21}})
    out = run_sweep(spec, executor_factory=lambda: InlineExecutor(run_trial), write_report=False)
    assert out.downstream is not None and [t.task for t in out.downstream.fit.tasks] == ["easy", "medium"]
    [p_easy, p_medium] = out.downstream.predictions
    t = out.downstream.target
    assert (p_easy["n"], p_easy["d"]) == pytest.approx((t["n_opt"], t["d_opt"]))
    for p in (p_easy, p_medium):
        a = p["accuracy"]
        assert a["95%"][0] <= a["80%"][0] <= a["estimate"] <= a["80%"][1] <= a["95%"][1]
    res = subprocess.run([sys.executable, "-m", "orchestrator.cli", "fit", str(tmp_path / "sim"), "--json",
                          "--bootstrap", "50"], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    doc = json.loads(res.stdout)["downstream"]
    assert [p["task"] for p in doc["predictions"]] == ["easy", "medium"] and "tasks" in doc
    store = open_results(str(tmp_path / "sim"))
    paths = write_report(store, store.read_table("trials").to_pandas(), out.fit, "sim", None,
                         downstream_for(store, out.fit, n_boot=50))
    names = {p.rsplit("/", 1)[1] for p in paths}
    assert {"task_easy_step1.png", "task_easy_step2.png", "task_medium_chained.png"} <= names
    assert "Two-step task predictions" in (tmp_path / "sim" / "report" / "index.html").read_text()
    assert main(["status", str(tmp_path / "sim")]) == 0


def test_fit_of_a_sweep_without_tasks_says_nothing_of_them(tmp_path):
    from orchestrator.report.downstream import downstream_for, lines
    from orchestrator.results import open_results

    store = ResultStore(str(tmp_path / "empty"))
    store.write_trial({"trial_id": "x", "status": "completed", "sweep": "s"})
    assert downstream_for(open_results(str(tmp_path / "empty")), None) is None and lines(None) == []


@pytest.mark.parametrize("family", ["gpt", "llama"])
def test_packed_items_score_as_their_separate_sequences(family):
    """One row per item (the context once, each choice attending to it and to itself) gives the
    log-probabilities of the separate context + choice sequences, truncation included."""
    import torch

    from workers.evals.scoring import _loglik, _loglik_packed, byte_encoder, encode_task
    from workers.evals.tasks import Item, Task
    from workers.gpt.arch import ShapeRule, shape_for_params
    from workers.gpt.model import build_model

    torch.manual_seed(0)
    model = build_model(shape_for_params(20e3, 256, 32, ShapeRule(head_dim=8, aspect_ratio=16, family=family))).eval()
    fn = lambda x, pos=None, mask=None: model(x, pos=pos, mask=mask)[0]  # noqa: E731
    rng = np.random.default_rng(1)
    items = tuple(Item("".join(chr(97 + k) for k in rng.integers(0, 26, rng.integers(1, 45))),
                       tuple("".join(chr(97 + k) for k in rng.integers(0, 26, rng.integers(1, 9))) + str(j)
                             for j in range(rng.integers(2, 5))), 0) for _ in range(40))
    enc = encode_task(Task("t", items), byte_encoder, 32)  # contexts up to 44 bytes: some truncated
    with torch.no_grad():
        plain = _loglik(enc, fn, torch.device("cpu"), 300)
        packed = _loglik_packed(enc, fn, torch.device("cpu"), 300)
    assert np.allclose(plain, packed, rtol=1e-5, atol=1e-4)
