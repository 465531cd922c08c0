"""The built-in GPT on several ranks (workers.gpt.parallel) trains what one rank trains.

Two processes in a gloo process group (as Ray Train starts them, without Ray: the Ray Train path
itself is tests/test_ray_train.py) each call run_trial on the same trial; rank 0 records, rank 1
writes nothing. Per-step losses equal one rank's within 1e-5 relative, under DDP and under FSDP2
(fully_shard on a CPU mesh); a checkpoint written on 2 ranks resumes on 1.
"""

from __future__ import annotations

import dataclasses
import os
import socket

import pyarrow.parquet as pq
import pytest
import torch.multiprocessing as mp

from workers.config import DataConfig, TrainConfig, TrialConfig
from workers.gpt.arch import shape_for_params
from workers.run import run_trial
from workers.run.distributed import ReadOnlyStore
from workers.store import ResultStore, TrialStatus

STEPS = 24


def _trial(root, cache_dir, strategy="ddp", workers=1, **train) -> TrialConfig:
    shape = shape_for_params(6e3, 256, 32)
    return TrialConfig(
        trial_id="p0", name="parallel", sweep="unit", shape=shape, tokens=256 * STEPS, seed=3, budget=0.0,
        train=TrainConfig(batch_tokens=256, n_evals=2, log_every=4, **train),
        data=DataConfig(builtin="python-stdlib", eval_tokens=1024, block_tokens=1024),
        results=str(root), cache_dir=cache_dir, workers=workers, strategy=strategy)


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank(rank: int, world: int, port: int, cfg: TrialConfig, stop_at: int | None) -> None:
    import torch
    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    if stop_at is not None:  # a preemption after the checkpoint at stop_at
        import workers.gpt.train as train

        def hook(steps_done):
            if steps_done >= stop_at:
                raise RuntimeError("preempted")
        train._after_log_boundary = hook
    try:
        run_trial(cfg, store=ResultStore(cfg.results) if rank == 0 else ReadOnlyStore(cfg.results))
    finally:
        dist.destroy_process_group()


def _on_ranks(cfg: TrialConfig, world: int = 2, stop_at: int | None = None) -> None:
    mp.start_processes(_rank, args=(world, _port(), cfg, stop_at), nprocs=world, start_method="spawn", join=True)


def _losses(root, tid="p0"):
    rows = pq.read_table(f"{root}/steps/{tid}.parquet").to_pylist()
    return [(r["step"], r["train_loss"], r["eval_loss"]) for r in rows]


@pytest.fixture(scope="module")
def one_rank(tmp_path_factory, cache_dir):
    root = tmp_path_factory.mktemp("one")
    result = run_trial(_trial(root, cache_dir))
    assert result.status is TrialStatus.COMPLETED
    return result, _losses(root)


def _close(a, b, rel=1e-5):
    assert [s for s, _, _ in a] == [s for s, _, _ in b]
    for (_, ta, ea), (_, tb, eb) in zip(a, b):
        assert ta == pytest.approx(tb, rel=rel)
        assert (ea is None) == (eb is None) and (ea is None or ea == pytest.approx(eb, rel=rel))


@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_two_ranks_train_what_one_rank_trains(tmp_path, cache_dir, one_rank, strategy):
    cfg = _trial(tmp_path, cache_dir, strategy=strategy, workers=2)
    _on_ranks(cfg)
    store = ResultStore(str(tmp_path))
    rows = store.read_table("trials").to_pylist()
    assert len(rows) == 1 and rows[0]["status"] == "completed"  # one row, from rank 0
    assert rows[0]["workers"] == 2 and rows[0]["strategy"] == strategy
    whole, whole_steps = one_rank
    _close(_losses(tmp_path), whole_steps)
    assert rows[0]["eval_loss"] == pytest.approx(whole.eval_loss, rel=1e-5)
    assert store.list_names("checkpoints") == []  # rank 0 deleted it once committed


@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_two_ranks_checkpointing_at_every_boundary_finish(tmp_path, cache_dir, one_rank, strategy):
    """Every rank joins each checkpoint (FSDP gathers the state on rank 0 alone) and the trial ends
    completed, with one rank's losses."""
    _on_ranks(_trial(tmp_path, cache_dir, strategy=strategy, workers=2, checkpoint_every_s=1e-9))
    [row] = ResultStore(str(tmp_path)).read_table("trials").to_pylist()
    assert row["status"] == "completed", row["error"]
    _close(_losses(tmp_path), one_rank[1])


def test_a_checkpoint_from_two_fsdp_ranks_resumes_on_one(tmp_path, cache_dir, one_rank):
    cfg = _trial(tmp_path, cache_dir, strategy="fsdp", workers=2, checkpoint_every_s=1e-9)
    _on_ranks(cfg, stop_at=12)
    store = ResultStore(str(tmp_path))
    [row] = store.read_table("trials").to_pylist()  # a FAILED row that keeps its checkpoint for the retry
    assert row["status"] == "failed" and store.read_bytes("checkpoints/p0.pt") is not None
    resumed = run_trial(dataclasses.replace(cfg, workers=1))  # the full state, in one rank's format
    assert resumed.status is TrialStatus.COMPLETED
    whole, whole_steps = one_rank
    _close(_losses(tmp_path), whole_steps)
    assert resumed.eval_loss == pytest.approx(whole.eval_loss, rel=1e-5)
