"""The GPT trainer: schedule, exact token count, determinism in the seed, divergence as data
(the contract every trainer keeps, failure as data included, is tests/test_trainers.py)."""

import math

import pyarrow.parquet as pq
import pytest

from workers.gpt.arch import shape_for_params
from workers.store import ResultStore, TrialStatus
from workers.gpt.train import lr_at
from workers.config import DataConfig, TrainConfig, TrialConfig
from workers.run import run_trial


def test_lr_schedule_warmup_then_cosine_to_ten_percent():
    cfg = TrainConfig(lr=1.0, min_lr_ratio=0.1, warmup_fraction=0.1)
    lrs = [lr_at(s, 100, cfg) for s in range(100)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(lrs[9:], lrs[10:]))  # monotone decay after warmup
    assert lrs[-1] == pytest.approx(0.1)  # reaches 10 % exactly at the last step


def trial(tmp_path, cache_dir, seed=0, lr=6e-3, tokens=256 * 40, tid="t0"):
    shape = shape_for_params(4e3, 256, 32)
    return TrialConfig(
        trial_id=tid, name="test", sweep="unit", shape=shape, tokens=tokens, seed=seed, budget=0.0,
        train=TrainConfig(lr=lr, batch_tokens=256, n_evals=2, log_every=5),
        data=DataConfig(builtin="python-stdlib", eval_tokens=1024, block_tokens=1024),
        results=str(tmp_path / "res"), cache_dir=cache_dir,
    )


def test_trial_trains_exactly_d_tokens_and_commits_rows(tmp_path, cache_dir):
    cfg = trial(tmp_path, cache_dir)
    r = run_trial(cfg)
    assert r.status is TrialStatus.COMPLETED and math.isfinite(r.eval_loss)
    row = pq.read_table(tmp_path / "res" / "trials" / "t0.parquet").to_pylist()[0]
    assert row["tokens"] == cfg.tokens and row["n_params"] == cfg.n_params
    assert row["flops"] == 6 * cfg.n_params * cfg.tokens
    steps = pq.read_table(tmp_path / "res" / "steps" / "t0.parquet").to_pandas()
    assert steps["step"].max() == 40 and steps["tokens"].max() == cfg.tokens
    assert steps["eval_loss"].notna().sum() == 3  # two during training, one at the end
    assert steps["eval_loss"].dropna().iloc[-1] == pytest.approx(row["eval_loss"])
    # loss improves from the unigram-ish start (ln 256 = 5.5)
    assert row["eval_loss"] < 5.0


def test_same_seed_same_loss_other_seed_differs(tmp_path, cache_dir):
    a = run_trial(trial(tmp_path, cache_dir, seed=1, tid="a"))
    b = run_trial(trial(tmp_path, cache_dir, seed=1, tid="b"))
    c = run_trial(trial(tmp_path, cache_dir, seed=2, tid="c"))
    assert a.eval_loss == b.eval_loss
    assert a.eval_loss != c.eval_loss


def test_nan_loss_is_a_diverged_trial_not_a_crash(tmp_path, cache_dir):
    r = run_trial(trial(tmp_path, cache_dir, lr=1e6, tid="boom"))
    assert r.status is TrialStatus.DIVERGED
    statuses = ResultStore(str(tmp_path / "res")).trial_statuses()
    assert statuses["boom"] is TrialStatus.DIVERGED


def test_compiled_training_matches_eager(tmp_path, cache_dir):
    """train.compile: torch.compile (inductor) trains the same model to the same loss."""
    from dataclasses import replace

    eager = trial(tmp_path / "a", cache_dir)
    compiled = replace(eager, train=eager.train.model_copy(update={"compile": True}), results=str(tmp_path / "b"))
    r_eager, r_compiled = run_trial(eager), run_trial(compiled)
    assert r_compiled.status is TrialStatus.COMPLETED, r_compiled.error
    assert r_compiled.eval_loss == pytest.approx(r_eager.eval_loss, abs=2e-3)
