"""A trial on several ranks: Ray Train's TorchTrainer (Train V2) runs :func:`workers.run.run_trial`
on every rank, and rank 0 alone records.

:func:`run_distributed` is what the executor runs for a trial with ``workers`` > 1, as a Ray task
that holds no resources itself (the ranks hold them: ``workers`` x the trial's CPUs and GPUs, in
one placement group Ray Train reserves). It starts the TorchTrainer, whose controller starts the
ranks and a torch.distributed process group (gloo on CPUs, NCCL on GPUs); each rank calls
``run_trial`` with the same trial. The trainer sees an initialised process group and splits the
global batch across ranks (workers.gpt.train); the built-in GPT wraps its model in DDP or FSDP2.

- **One row, written once.** Rank 0's context writes to the result store; the other ranks get a
  :class:`ReadOnlyStore` (they read the same checkpoints to resume, and write nothing), so the
  trial's rows, checkpoints and row are committed exactly once, by rank 0, as on one rank.
- **Failures.** A NaN is a DIVERGED row, decided alike on every rank. An exception is caught by
  ``run_trial`` (rank 0's becomes the FAILED row, with its traceback and usage); the rank then
  leaves the process group and raises, so Ray Train ends the group at once (a peer blocked in an
  NCCL collective would otherwise wait out the timeout) and restarts it
  (``FailureConfig(max_failures=resources.max_retries)``), as it does when a rank *dies* (its
  process killed, its node lost): the restarted ranks resume from the trial's last checkpoint,
  and a trial already committed is not trained again. Past the retries, :func:`run_distributed`
  keeps the FAILED row rank 0 wrote and adds Ray Train's error to it, or commits one itself
  where rank 0 wrote none (it was the one that died), never over a finished row.
- **Placement.** The ranks wait for their placement group as long as it takes: on a cluster an
  autoscaler may add the nodes they need, and the driver's ledger warns when a trial asks for
  more than the cluster has now. On a local Ray, the estimate refuses such a trial before the run.
- **No hang.** Collectives time out after :data:`COLLECTIVE_TIMEOUT_S` (a rank stuck in an
  all-reduce its peer will never join fails the group instead of waiting forever), and the
  controller's result path is a plain ``fit()`` whose errors become the row.
"""

from __future__ import annotations

import logging
import math
import os
import tempfile
import traceback

from workers.config import TrialConfig, TrialResult, trial_row
from workers.store import ResultStore, TrialStatus

__all__ = ["COLLECTIVE_TIMEOUT_S", "ReadOnlyStore", "run_distributed"]

log = logging.getLogger(__name__)

# How long a rank waits in one collective before the process group fails. Ray Train's default
# (30 min) would hold a group's resources that long after a peer raised; a step of the models
# this project trains takes seconds, a checkpoint's gather a minute or two.
COLLECTIVE_TIMEOUT_S = 600


class ReadOnlyStore(ResultStore):
    """A rank other than 0's view of the result store: reads as usual, writes nothing."""

    writes = False

    def _write(self, table, trial_id, data) -> None:
        pass

    def write_bytes(self, rel_path: str, data: bytes) -> None:
        pass

    def write_text(self, name: str, text: str) -> None:
        pass

    def delete(self, rel_path: str) -> None:
        pass

    def delete_dir(self, rel_dir: str) -> None:
        pass


def _rank_main(config: dict) -> None:
    """Ray Train's per-rank function: the trial through run_trial, recorded by rank 0 only.

    A trial already finished (a group restarted after rank 0 committed) is not trained again. A
    rank whose trial failed (rank 0 has committed the FAILED row) leaves the process group and
    raises, so that Ray Train ends the group now, rather than a peer blocked in a collective at
    the timeout, and restarts it (up to resources.max_retries)."""
    import ray.train
    import torch.distributed as dist

    from workers.run import run_trial

    cfg: TrialConfig = config["cfg"]
    rank = ray.train.get_context().get_world_rank()
    done = ResultStore(cfg.results).read_trial(cfg.trial_id)
    if done is not None and TrialStatus(done["status"]).is_finished():
        return
    result = run_trial(cfg, store=ResultStore(cfg.results) if rank == 0 else ReadOnlyStore(cfg.results))
    if result.status is not TrialStatus.FAILED:
        return
    log.error("trial %s, rank %d of %d: %s", cfg.trial_id, rank, cfg.workers, result.error)
    if dist.is_available() and dist.is_initialized():
        try:
            dist.destroy_process_group()
        except Exception:  # leaving is all that matters
            pass
    raise RuntimeError(f"rank {rank}: {result.error.splitlines()[0] if result.error else 'failed'}")


def run_distributed(cfg: TrialConfig, max_retries: int = 2) -> TrialResult:
    """Train ``cfg`` on ``cfg.workers`` ranks (module docstring); its committed result."""
    from ray.train import FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    store = ResultStore(cfg.results)
    before = store.read_trial(cfg.trial_id)
    if before is not None and TrialStatus(before["status"]).is_finished():  # committed before a restart
        return TrialResult.from_row(before)
    gpu = cfg.gpus > 0
    per_rank = {"CPU": float(cfg.cpus)} | ({"GPU": float(cfg.gpus)} if gpu else {})  # as the ledger counts
    trainer = TorchTrainer(
        _rank_main,
        train_loop_config={"cfg": cfg},
        scaling_config=ScalingConfig(num_workers=cfg.workers, use_gpu=gpu, resources_per_worker=per_rank),
        torch_config=TorchConfig(backend="nccl" if gpu else "gloo", timeout_s=COLLECTIVE_TIMEOUT_S),
        # Ray Train's own storage holds nothing of ours (checkpoints go to the result store):
        # a node-local scratch directory.
        run_config=RunConfig(name=f"scalesweep-{cfg.trial_id}",
                             storage_path=os.path.join(tempfile.gettempdir(), "scalesweep-train"),
                             failure_config=FailureConfig(max_failures=max_retries)),
    )
    try:
        trainer.fit()
    except Exception as e:  # the group failed on every retry (ranks killed), or Ray Train itself did
        done = store.read_trial(cfg.trial_id)
        if done is not None and TrialStatus(done["status"]).is_finished():  # never overwrite a finished row
            return TrialResult.from_row(done)
        error = (f"the trial's {cfg.workers} ranks failed on Ray Train after {max_retries} restarts: "
                 f"{type(e).__name__}: {str(e).strip()}\n{traceback.format_exc()}")
        log.error("trial %s: Ray Train failed (%s)", cfg.trial_id, str(e).splitlines()[0] if str(e) else type(e).__name__)
        if done is not None and (before is None or done["finished_at"] != before["finished_at"]):
            # Rank 0's FAILED row of this launch: its traceback and usage stand, Ray Train's error added.
            row = dict(done, error=f"{done['error']}\n{error}")
            store.write_trial(row)
            return TrialResult.from_row(row)
        return _failed(cfg, store, error)
    row = store.read_trial(cfg.trial_id)
    if row is None:  # rank 0 returned without committing: cannot happen unless the store refused the write
        raise RuntimeError(f"trial {cfg.trial_id}: Ray Train finished but rank 0 committed no row in {store.uri}")
    return TrialResult.from_row(row)


def _failed(cfg: TrialConfig, store: ResultStore, error: str) -> TrialResult:
    row = trial_row(cfg, cfg.n_params, TrialStatus.FAILED, math.nan, math.nan, 0.0, error)
    store.write_trial(row)
    return TrialResult(cfg.trial_id, TrialStatus.FAILED, math.nan, 0.0, error, row)

