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
  ``run_trial``: on rank 0 it is the FAILED row, and the rank leaves the process group so that its
  peers' collectives fail at once instead of at the timeout; on another rank it is raised after
  leaving, and Ray Train restarts the group (``FailureConfig(max_failures=resources.max_retries)``),
  as it does when a rank *dies* (its process killed, its node lost): the restarted ranks resume
  from the trial's last checkpoint, and a trial already committed is not trained again. Past the
  retries, :func:`run_distributed` commits the FAILED row itself, with Ray Train's error (the
  failing rank's message among it), never over a finished row.
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
    rank whose trial failed leaves the process group at once, so a peer blocked in a collective
    fails now rather than at the timeout: rank 0 has committed its FAILED row; another rank raises,
    and Ray Train restarts the group (up to resources.max_retries), its error in the logs and, past
    the retries, in the row the launcher commits."""
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
    if rank > 0:
        raise RuntimeError(f"rank {rank}: {result.error.splitlines()[0] if result.error else 'failed'}")


def run_distributed(cfg: TrialConfig, max_retries: int = 2) -> TrialResult:
    """Train ``cfg`` on ``cfg.workers`` ranks (module docstring); its committed result."""
    from ray.train import FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    store = ResultStore(cfg.results)
    done = store.read_trial(cfg.trial_id)
    if done is not None and TrialStatus(done["status"]).is_finished():  # committed before a restart
        return TrialResult.from_row(done)
    gpu = cfg.gpus > 0
    per_rank = {"CPU": float(cfg.cpus)} | ({"GPU": float(cfg.gpus)} if gpu else {})  # as the ledger counts
    unfit = _no_node_holds(per_rank)
    if unfit:
        return _failed(cfg, store, unfit)
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
        error = f"{type(e).__name__}: {str(e).strip()}\n{traceback.format_exc()}"
        log.error("trial %s: Ray Train failed (%s)", cfg.trial_id, str(e).splitlines()[0] if str(e) else type(e).__name__)
        return _failed(cfg, store, f"the trial's {cfg.workers} ranks failed on Ray Train after {max_retries} restarts: "
                                   f"{error}")
    row = store.read_trial(cfg.trial_id)
    if row is None:  # rank 0 returned without committing: cannot happen unless the store refused the write
        raise RuntimeError(f"trial {cfg.trial_id}: Ray Train finished but rank 0 committed no row in {store.uri}")
    return TrialResult.from_row(row)


def _failed(cfg: TrialConfig, store: ResultStore, error: str) -> TrialResult:
    row = trial_row(cfg, cfg.n_params, TrialStatus.FAILED, math.nan, math.nan, 0.0, error)
    store.write_trial(row)
    return TrialResult(cfg.trial_id, TrialStatus.FAILED, math.nan, 0.0, error, row)


def _no_node_holds(per_rank: dict[str, float]) -> str:
    """Why the one node of a single-node Ray cannot hold one rank's resources ("" if it can, or if
    the cluster has several nodes): Ray Train would wait for such a placement group for ever."""
    import ray

    nodes = [n.get("Resources", {}) for n in ray.nodes() if n.get("Alive")]
    # A cluster of several nodes may be autoscaling: a node of the shape asked for may yet join.
    if len(nodes) != 1 or all(nodes[0].get(k, 0.0) + 1e-9 >= v for k, v in per_rank.items()):
        return ""
    biggest = max(nodes, key=lambda r: (r.get("GPU", 0.0), r.get("CPU", 0.0)))
    return (f"one rank asks for {per_rank}, more than any node of the cluster has (the largest: "
            f"{biggest.get('CPU', 0.0):g} CPUs and {biggest.get('GPU', 0.0):g} GPUs; expected resources per rank "
            "that one node holds)")
