"""Data parallelism for the built-in GPT: the same trial on several ranks, the same result.

A trial with ``workers`` > 1 runs on Ray Train (workers.run.distributed), which initialises a
torch.distributed process group before the trainer starts. The trainer then:

- **splits the global batch**: step s's batch is the one a single rank would draw
  (workers.gpt.data: it depends on seed and step only), and rank r trains on its r-th slice of
  ``batch_size / world`` sequences. With equal slices, the mean of the ranks' mean losses is the
  global batch's, and so is the gradient DDP or FSDP averages: per-step losses equal one rank's
  up to float rounding (tests/test_parallel.py: 1e-5 relative);
- **wraps the model**: ``ddp``, DistributedDataParallel (every rank holds everything, gradients
  all-reduced); ``fsdp``, FSDP2's ``fully_shard`` on every block and then the root (parameters,
  gradients and AdamW state sharded across ranks, gathered per block for its forward and backward);
- **agrees at log boundaries**: one all-reduce of [the window's summed loss, this rank's wish to
  checkpoint], so every rank logs the global loss, and every rank takes part in a checkpoint
  (under FSDP gathering the full state is a collective) when any rank's clock says it is time;
- **checkpoints the full state**, in the format of a single rank (the model's state dict and the
  optimiser's, parameters numbered in order), so a checkpoint taken on any number of ranks resumes
  on any other (:func:`full_state`, :func:`load_full_state`). Rank 0 writes it; every rank reads it.

Evaluation runs on every rank on the same held-out tokens (under FSDP a forward is collective),
so every rank takes the same decisions (diverged, evaluate tasks) at the same steps.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["Group", "group", "wrap", "local_slice", "agree", "full_state", "load_full_state"]


@dataclass(frozen=True)
class Group:
    rank: int = 0
    world: int = 1
    strategy: str = "ddp"

    @property
    def sharded(self) -> bool:
        return self.world > 1 and self.strategy == "fsdp"


def group(strategy: str) -> Group:
    """This process's rank and world size (0, 1 outside an initialised process group)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        return Group(dist.get_rank(), dist.get_world_size(), strategy)
    return Group(0, 1, strategy)


def wrap(model: torch.nn.Module, g: Group, device: torch.device) -> torch.nn.Module:
    """What the training step calls: ``model`` itself on one rank or under FSDP (sharded in
    place: call before building the optimiser), a DDP wrapper under ddp."""
    if g.world == 1:
        return model
    if g.strategy == "fsdp":
        from torch.distributed.fsdp import fully_shard

        for block in model.blocks:
            fully_shard(block)
        fully_shard(model)
        return model
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)


def local_slice(x, y, g: Group):
    """Rank r's r-th equal slice of the global batch (rows: sequences)."""
    if g.world == 1:
        return x, y
    n = x.shape[0] // g.world
    return x[g.rank * n:(g.rank + 1) * n], y[g.rank * n:(g.rank + 1) * n]


def agree(loss_sum: torch.Tensor, want_checkpoint: bool, g: Group) -> tuple[float, bool]:
    """(the global window's summed loss, whether any rank wants a checkpoint): one all-reduce."""
    if g.world == 1:
        return loss_sum.item(), want_checkpoint
    import torch.distributed as dist

    v = torch.stack([loss_sum.detach().float(), torch.tensor(float(want_checkpoint), device=loss_sum.device)])
    dist.all_reduce(v)
    return v[0].item() / g.world, v[1].item() > 0


def _fqns(model: torch.nn.Module, opt: torch.optim.Optimizer) -> list[str]:
    """The optimiser's parameters in its order, by name (a tied parameter under its first name)."""
    names = {}
    for name, p in model.named_parameters():
        names.setdefault(id(p), name)
    return [names[id(p)] for grp in opt.param_groups for p in grp["params"]]


def full_state(model: torch.nn.Module, opt: torch.optim.Optimizer, g: Group) -> tuple[dict, dict]:
    """(model state dict, optimiser state dict) in a single rank's format. Under FSDP a
    collective: every rank calls it; rank 0 gets the state, the others ({}, {})."""
    if not g.sharded:
        return model.state_dict(), opt.state_dict()
    from torch.distributed.checkpoint.state_dict import (StateDictOptions, get_model_state_dict,
                                                         get_optimizer_state_dict)

    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    msd = get_model_state_dict(model, options=options)
    osd = get_optimizer_state_dict(model, opt, options=options)
    if g.rank > 0:  # with cpu_offload the full state is gathered on rank 0 only; the others get {}
        return {}, {}
    index = {name: i for i, name in enumerate(_fqns(model, opt))}
    state = {index[k]: v for k, v in osd["state"].items()}
    groups = [dict(grp, params=[index[k] for k in grp["params"]]) for grp in osd["param_groups"]]
    return msd, {"state": state, "param_groups": groups}


def load_full_state(model: torch.nn.Module, opt: torch.optim.Optimizer, msd: dict, osd: dict, g: Group) -> None:
    """Load a single rank's format (:func:`full_state`) into ``model`` and ``opt`` on this rank."""
    if not g.sharded:
        model.load_state_dict(msd)
        opt.load_state_dict(osd)
        return
    from torch.distributed.checkpoint.state_dict import (StateDictOptions, set_model_state_dict,
                                                         set_optimizer_state_dict)

    names = _fqns(model, opt)
    options = StateDictOptions(full_state_dict=True)
    set_model_state_dict(model, msd, options=options)
    fqn_osd = {"state": {names[int(i)]: v for i, v in osd["state"].items()},
               "param_groups": [dict(grp, params=[names[int(i)] for i in grp["params"]]) for grp in osd["param_groups"]]}
    set_optimizer_state_dict(model, opt, fqn_osd, options=options)
