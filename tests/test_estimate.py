"""The pre-run estimate: absurd specs are refused in one line before Ray starts or anything is
written; the memory model agrees with what torch really allocates; normal sweeps pass and
print their estimate."""

import pytest
import torch
import yaml

from conftest import ROOT, autograd_saved_bytes, tiny_spec_dict
from orchestrator.running import cluster
from orchestrator.cli import main
from orchestrator.errors import UserError
from orchestrator.planning.estimate import (check, check_submission, cluster_capacity, estimate_sweep, local_capacity,
                                   trial_memory)
from orchestrator.planning.trials import TrialFactory, plan_trials
from orchestrator.spec import load_spec, parse_spec
from workers.gpt.arch import GPTShape
from workers.gpt.model import GPT

SIM_WORLD = {"law": {"E": 1.69, "A": 400, "B": 400, "alpha": 0.31, "beta": 0.31}}


def _estimate(spec, capacity=None, cache_dir=""):
    factory = TrialFactory(spec, cache_dir)
    trials = plan_trials(spec, factory) if spec.planner == "static" else []
    return estimate_sweep(spec, factory, trials, capacity or local_capacity(spec, num_cpus=2))


def _sim(results, **overrides) -> dict:
    overrides.setdefault("world", SIM_WORLD)
    spec = tiny_spec_dict(results, trainer="simulated", **overrides)
    spec.pop("data")
    return spec


@pytest.fixture
def no_ray(monkeypatch):
    """A refused spec must never get as far as starting (or joining) Ray."""
    def refuse(*a, **k):
        raise AssertionError("Ray was started for a spec the estimate should have refused")

    monkeypatch.setattr(cluster, "connect", refuse)


# -- memory model against torch -------------------------------------------------------------------

# dense, and a mixture of experts (8 experts, 2 a token): its state counts every expert
SHAPES = [GPTShape(2, 48, 6, 256, 32), GPTShape(3, 96, 12, 1024, 64), GPTShape(2, 32, 4, 256, 32, 8, 2)]


@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_state_bytes_are_exactly_params_grads_and_adamw(shape):
    from workers.gpt.train import _optimizer
    from workers.config import TrainConfig

    model = GPT(shape)
    opt = _optimizer(model, TrainConfig(), torch.device("cpu"))
    x = torch.randint(0, shape.vocab_size, (2, shape.seq_len))
    _, loss = model(x, x)
    loss.backward()
    opt.step()
    params = list(model.parameters())  # the tied head counted once, as torch stores it
    moments = [t for p in params for k, t in opt.state[p].items() if k != "step"]
    allocated = sum(t.nbytes for t in params) + sum(p.grad.nbytes for p in params) + sum(t.nbytes for t in moments)
    assert trial_memory(shape, 64).state == allocated


@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_activations_and_logits_match_what_autograd_saves(shape):
    """Every tensor autograd keeps for the backward pass, counted once per storage."""
    batch_tokens = 8 * shape.seq_len
    saved = autograd_saved_bytes(GPT(shape), torch.randint(0, shape.vocab_size, (8, shape.seq_len)))
    est = trial_memory(shape, batch_tokens)
    one_logits = batch_tokens * shape.vocab_size * 4  # the loss saves its log-softmax, once
    assert one_logits in saved and est.logits == 4 * one_logits
    assert est.activations == pytest.approx(sum(saved) - one_logits, rel=0.05)


# -- refusals through the CLI: one line, exit 2, nothing written, no Ray ----------------------------

REFUSED = [
    ("huge budget", dict(sweep={"kind": "isoflop", "budgets": [1e30], "model_sizes": [2e3]}),
     ["sweep.budgets: estimated", "hours for 1e+30 FLOPs", "FLOPs/s", "beyond resources.max_hours = 24",
      "--allow-long"]),
    ("huge model", dict(sweep={"kind": "isoflop", "budgets": [1e20], "model_sizes": [1e13]}),
     ["sweep.model_sizes: trial 'N=10T", "needs ~160 TB", "this node's memory"]),
    ("huge grid tokens", dict(sweep={"kind": "grid", "model_sizes": [2e3], "tokens": [1e20]}),
     ["sweep.tokens: estimated", "beyond resources.max_hours"]),
    ("huge batch", dict(train={"batch_tokens": 2**30}, sweep={"kind": "grid", "model_sizes": [2e3], "tokens": [2**35]}),
     ["train.batch_tokens: trial", "logits", "at train.batch_tokens=1073741824"]),
    ("huge seq_len", dict(model={"seq_len": 65536}, train={"batch_tokens": 2**16 * 2**14},
                          sweep={"kind": "grid", "model_sizes": [1e5], "tokens": [2**35]}),
     ["train.batch_tokens: trial", "needs ~"]),
    ("tight max_hours", dict(resources={"max_hours": 1e-6}), ["sweep.budgets: estimated", "max_hours = 1e-06"]),
    ("small memory_gb", dict(resources={"memory_gb": 1e-4}), ["trial 'N=", "resources.memory_gb"]),
    ("more cpus than here", dict(resources={"cpus": 4096}), ["resources.cpus=4096", "no trial could ever be scheduled"]),
    ("adaptive max_flops", dict(sweep=None, planner="adaptive",
                                adaptive={"min_flops": 1e9, "max_flops": 1e30, "n_range": [1e3, 1e5],
                                          "flop_budget": 1e30}),
     ["adaptive.max_flops: estimated", "hours for 1e+30 FLOPs"]),
    ("adaptive n_range", dict(sweep=None, planner="adaptive",
                              adaptive={"min_flops": 1e9, "max_flops": 1e25, "n_range": [1e3, 1e13],
                                        "flop_budget": 1e25}),
     ["adaptive.n_range: trial 'the largest that adaptive.n_range and max_flops allow (N=1.29e+12)'", "needs ~20.7 TB"]),
]


@pytest.mark.parametrize("overrides,expected", [r[1:] for r in REFUSED], ids=[r[0] for r in REFUSED])
def test_absurd_spec_refused_before_ray_nothing_written(tmp_path, capsys, no_ray, cache_dir, monkeypatch,
                                                        overrides, expected):
    monkeypatch.setenv("SCALESWEEP_CACHE", cache_dir)
    results = tmp_path / "results"
    spec = tiny_spec_dict(str(results), **overrides)
    if spec["sweep"] is None:
        spec.pop("sweep")
    path = tmp_path / "absurd.yaml"
    path.write_text(yaml.safe_dump(spec))
    assert main(["run", str(path), "--no-dashboard"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err and err.startswith("scalesweep: error: ")
    for piece in expected:
        assert piece in err, err
    assert not results.exists()


def test_simulated_duration_refused_by_world_duration(tmp_path, capsys, no_ray):
    spec = _sim(str(tmp_path / "results"), world={**SIM_WORLD, "duration_s": 86400},
                sweep={"kind": "isoflop", "budgets": [1e20, 1e21], "model_sizes": [1e6, 1e7, 1e8]})
    path = tmp_path / "slow.yaml"
    path.write_text(yaml.safe_dump(spec))
    assert main(["run", str(path), "--num-cpus", "2"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("scalesweep: error: world.duration_s: estimated 72 hours for 6 simulated trials of 86400 s")
    assert not (tmp_path / "results").exists()


def test_simulated_sweeps_are_not_refused_for_flops_they_do_not_spend(tmp_path):
    spec = parse_spec(_sim(str(tmp_path), sweep={"kind": "isoflop", "budgets": [1e30], "model_sizes": [1e13]}))
    est = _estimate(spec)
    check(est, spec)
    assert est.seconds == 0 and est.memory == [] and "1e+30 FLOPs simulated, none computed" in est.summary()


# -- the ways past the time limit -------------------------------------------------------------------

def test_allow_long_and_max_hours_null_pass_the_time_check(tmp_path, capsys, no_ray, cache_dir, monkeypatch):
    long = {"kind": "isoflop", "budgets": [1e18], "model_sizes": [2e3]}
    spec = parse_spec(tiny_spec_dict(str(tmp_path), sweep=long))
    est = _estimate(spec, cache_dir=cache_dir)
    with pytest.raises(UserError, match="beyond resources.max_hours"):
        check(est, spec)
    check(est, spec, allow_long=True)
    unlimited = parse_spec(tiny_spec_dict(str(tmp_path), sweep=long, resources={"max_hours": None}))
    check(_estimate(unlimited, cache_dir=cache_dir), unlimited)
    # Through the CLI: --allow-long gets past the estimate, to the next check (an unwritable results path).
    monkeypatch.setenv("SCALESWEEP_CACHE", cache_dir)
    blocker = tmp_path / "file"
    blocker.write_text("")
    path = tmp_path / "long.yaml"
    path.write_text(yaml.safe_dump(tiny_spec_dict(str(blocker / "results"), sweep=long)))
    assert main(["run", str(path), "--allow-long"]) == 2
    assert "results: cannot create" in capsys.readouterr().err


# -- normal sweeps pass, with an estimate in the right ballpark --------------------------------------

def test_quickstart_estimate_is_minutes_and_passes(cache_dir):
    """The quickstart takes ~4-5 min on 2 cores (README); the estimate must be that order and pass."""
    spec = load_spec(ROOT / "specs" / "quickstart.yaml")
    est = _estimate(spec, local_capacity(spec, num_cpus=2), cache_dir)
    check(est, spec)
    assert est.n_trials == 13 and 2 * 60 <= est.seconds <= 15 * 60
    assert est.memory[0][1].total < 1e9


def test_shipped_specs_pass_the_submit_check(cache_dir):
    """gpu_sweep.yaml's token file is on the cluster only: planned from its stated vocabulary."""
    for name in ("quickstart", "gpu_sweep", "simulated_grid", "simulated_adaptive"):
        line = check_submission(load_spec(ROOT / "specs" / f"{name}.yaml"), cache_dir)
        assert line.startswith("Estimate: "), line


def test_submit_refuses_an_absurd_spec_before_contacting_a_cluster(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    spec = _sim(str(tmp_path / "results"), world={**SIM_WORLD, "duration_s": 86400}, resources={"max_hours": 12},
                sweep={"kind": "grid", "model_sizes": [1e6], "tokens": [1e9, 2e9]})
    path = tmp_path / "slow.yaml"
    path.write_text(yaml.safe_dump(spec))
    assert main(["submit", str(path)]) == 2  # refused before it asks for --address
    err = capsys.readouterr().err
    assert "world.duration_s: estimated 24 hours for 2 simulated trials of 86400 s on any number of workers" in err


def test_cluster_checks_memory_only_against_a_stated_limit(tmp_path):
    huge = {"kind": "isoflop", "budgets": [1e20], "model_sizes": [1e13]}
    spec = parse_spec(_sim(str(tmp_path), sweep=huge))  # simulated: needs no model memory
    check(_estimate(spec, cluster_capacity(spec)), spec)
    spec = parse_spec(tiny_spec_dict(str(tmp_path), sweep=huge, resources={"max_hours": None}))
    check(_estimate(spec, cluster_capacity(spec)), spec)  # a cluster's memory is unknown
    stated = parse_spec(tiny_spec_dict(str(tmp_path), sweep=huge, resources={"max_hours": None, "memory_gb": 80}))
    with pytest.raises(UserError, match=r"needs ~160 TB .* one trial has 80 GB \(resources.memory_gb\)"):
        check(_estimate(stated, cluster_capacity(stated)), stated)


def test_unknown_cluster_holds_only_the_largest_trial_against_the_limit(tmp_path):
    many = {"kind": "isoflop", "budgets": [1e14], "model_sizes": [2e3, 3e3, 4e3, 5e3, 6e3, 7e3, 8e3]}
    spec = parse_spec(tiny_spec_dict(str(tmp_path), sweep=many, resources={"max_hours": 2.5}))
    local = _estimate(spec, local_capacity(spec, num_cpus=1))
    with pytest.raises(UserError, match="on 1 worker;"):
        check(local, spec)
    remote = _estimate(spec, cluster_capacity(spec))
    check(remote, spec)  # 7 trials of ~1.9 h each: on enough workers, ~1.9 h
    assert remote.seconds == pytest.approx(local.largest_flops / remote.capacity.flops_per_s)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a GPU")
def test_gpus_without_a_gpu_refused(tmp_path, capsys, no_ray):
    path = tmp_path / "gpu.yaml"
    path.write_text(yaml.safe_dump(_sim(str(tmp_path / "results"), resources={"gpus": 0.5})))
    assert main(["run", str(path)]) == 2
    assert "resources.gpus=0.5: torch sees no GPUs on this machine" in capsys.readouterr().err


@pytest.mark.ray
def test_estimate_printed_at_the_start_of_a_run(ray_cluster, tmp_path, capsys):
    path = tmp_path / "sim.yaml"
    path.write_text(yaml.safe_dump(_sim(str(tmp_path / "results"))))
    assert main(["run", str(path)]) == 0
    err = capsys.readouterr().err
    first = err.splitlines()[0]
    assert first.startswith("Estimate: 6 simulated trials") and "world.duration_s = 0 s per trial" in first, err


def test_gpu_share_of_memory_and_workers(tmp_path, monkeypatch):
    """No GPU here: the probe is faked. A quarter GPU gets a quarter of its memory and throughput."""
    from orchestrator.planning import estimate

    monkeypatch.setattr(estimate, "_gpus", lambda: (1, 80e9))
    spec = parse_spec(tiny_spec_dict(str(tmp_path), resources={"cpus": 1, "gpus": 0.25}))
    cap = local_capacity(spec, num_cpus=16)
    assert cap.workers == 4 and cap.memory == 20e9 and "0.25 of the GPU's 80 GB" in cap.memory_source
    assert cap.flops_per_s == estimate.GPU_FLOPS * 0.25
    two = parse_spec(tiny_spec_dict(str(tmp_path), resources={"gpus": 2}))
    with pytest.raises(UserError, match="resources.gpus=2: torch sees 1 GPU on this machine"):
        check(_estimate(two, local_capacity(two, num_cpus=16)), two)
    monkeypatch.setattr(estimate, "_gpus", lambda: (1, None))  # no nvidia-smi: say so, check nothing
    cap = local_capacity(spec, num_cpus=16)
    assert cap.memory is None and "unknown" in cap.memory_source
