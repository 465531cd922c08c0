"""What a sweep will cost, before it runs: its FLOPs, its wall time and each trial's memory.

``run_sweep`` calls :func:`estimate_sweep` and :func:`check` after planning and before anything
is written or Ray is started, so an absurd spec (a 1e30-FLOP budget, a 1e13-parameter model,
a batch whose logits fill a node) fails in a second with one line instead of training forever
or dying at its first allocation. The same estimate is printed at the start of every run.

Three parts, each as simple as it can be and still be right to a small factor:

- **Memory per trial** (:func:`trial_memory`), from the shape alone: fp32 parameters, their
  gradients and AdamW's two moments (16 bytes per parameter), the activations autograd keeps
  for the backward pass, and the logits' peak. Checked against what one trial has: this node's
  memory on CPU, the GPU's memory times ``resources.gpus``, or ``resources.memory_gb``.
- **Throughput**: ``resources.flops_per_s`` when stated, else a per-device default below
  (:data:`CPU_FLOPS_PER_THREAD`, :data:`GPU_FLOPS`), counted as C = 6 N D like every budget.
- **Wall time**: trials run ``workers`` at a time, so the sweep takes about
  max(total / (workers x rate), largest / rate), the makespan bound that a
  largest-first order (plan_trials) comes within 4/3 of (Graham 1969, "Bounds on
  multiprocessing timing anomalies"). Workers are counted as Ray will: the
  CPUs (and GPUs) of the local node divided by one trial's ``resources.cpus`` (and
  ``resources.gpus``). On a cluster not yet joined (``--address``, ``scalesweep submit``) the
  count is unknown, and only the largest trial's own time is held against the limit: that
  much the sweep takes on any number of workers.

Simulated trials (trainer: simulated) spend no real FLOPs: their time is ``world.duration_s``
each and they need no model memory, so they are never refused for the FLOPs they simulate.
"""

from __future__ import annotations

import math
import os
import shutil
import subprocess
from dataclasses import dataclass, field

from orchestrator.errors import UserError
from orchestrator.planning.trials import TrialFactory
from orchestrator.spec import GridSweep, SweepSpec
from workers.gpt.arch import GPTShape, ffn_hidden
from workers.gpt.data import BYTE_VOCAB
from workers.flops import tokens_for_budget, train_flops

__all__ = ["CPU_FLOPS_PER_THREAD", "GPU_FLOPS", "Capacity", "TrialMemory", "SweepEstimate", "trial_memory",
           "local_capacity", "cluster_capacity", "estimate_sweep", "check", "check_submission"]

# Default throughput of one CPU thread, in C = 6 N D FLOPs per second of a trial's wall time
# (evaluations included). Calibrated on the quickstart (13 trials, 9k-220k parameters, 1.18e13
# FLOPs, 2 workers of 1 thread): 263 s on an idle 2-core machine (README) is 2.2e10 per
# worker; the same run on that machine shared with two other jobs took 1256 s (4.9e9). A
# single-thread loop of workers/gpt/train.py measured 4e9 at 9k parameters, 1.6e10 at 220k and
# 3.4e10 at 5M (tiny models are overhead-bound), so larger CPU trials are estimated long.
CPU_FLOPS_PER_THREAD = 2e10
# Default for one whole GPU: 3e13 is ~10 % of an A100's dense bf16 peak (312 TFLOP/s), the
# utilisation a 10-100M-parameter GPT with 8k-token batches and no torch.compile can expect.
# Not measured here (no GPU); a trial with gpus: 0.25 is assumed to get a quarter of it.
GPU_FLOPS = 3e13

FP32 = 4  # bytes; parameters, optimiser state and (upper bound on GPUs, see trial_memory) activations
GB = 1e9


@dataclass(frozen=True)
class TrialMemory:
    """Bytes one training trial holds at its peak (see :func:`trial_memory`)."""

    state: int  # parameters, gradients, AdamW exp_avg and exp_avg_sq
    activations: int  # what autograd saves for the backward pass, every layer
    logits: int  # the logits' peak during the loss and its backward

    @property
    def total(self) -> int:
        return self.state + self.activations + self.logits


def trial_memory(shape: GPTShape, batch_tokens: int, workers: int = 1, strategy: str = "ddp") -> TrialMemory:
    """Peak memory of one training step of the model of ``shape`` on ``batch_tokens`` tokens,
    on one rank of ``workers`` (each trains on batch_tokens / workers; under ``fsdp`` each holds
    1 / workers of the state, the parameters of the block being computed gathered on top: not
    counted, as they are one block's).

    - state: 16 bytes per parameter: fp32 weights, fp32 gradients and AdamW's two fp32 moments
      (also on GPUs: autocast keeps the weights in fp32; workers/gpt/train.py).
    - activations: per layer and token, 16 * d_model + n_head values. Korthikanti et al. 2022
      ("Reducing Activation Recomputation in Large Transformer Models", eq. 1) count
      s*b*h*(34 + 5*a*s/h) bytes per layer in 16-bit with dropout; without dropout's two 1-byte
      masks the 34 is 32 bytes = 16 values, and SDPA's fused attention keeps one logsumexp per
      head instead of the 5*a*s^2 softmax term. Here they are fp32 (4 bytes): exact on CPU; on
      GPUs under bf16 autocast about half are bf16, so this over-counts by up to ~1.5x. Plus
      the final LayerNorm's input and output (2 * d_model). Checked against autograd's saved
      tensors in tests/test_estimate.py.
    - logits: 4 fp32 tensors of batch_tokens x vocab: the logits, the log-softmax saved by the
      loss, and their two gradients in the backward (the peak measured with torch's CPU
      allocator, as noted in specs/gpu_sweep.yaml).

    A mixture of experts (workers.gpt.model.MoE) holds state for all its experts
    (``n_params_total``), and its MLP's 8 d_model values per token become 11 d_model + 7 per
    expert the token is routed to (its gathered input, fc output, GELU output, output and gated
    output; gate and indices), plus the router's probabilities and, for top_k > 1, the
    renormalised weights (tests/test_moe.py counts them with autograd's saved tensors).

    A llama (workers.gpt.llama) keeps per block and token 12 d_model + 4 h + n_head + 2 values,
    h = ffn_hidden(d_model): each of its two RMSNorms (elementwise ops in eager mode) keeps its
    input, the normalised input, its output and the inverse RMS (3 d + 1); attention the qkv
    output (v is a view of it), the rotated q and k, SDPA's output and logsumexp (6 d + n_head);
    SwiGLU its gate and up outputs, the SiLU and the product (4 h). The final RMSNorm 3 d + 1.
    Checked the same way in tests/test_llama.py.
    """
    d, k = shape.d_model, shape.top_k
    if shape.family == "llama":
        per_token = shape.n_layer * (12 * d + 4 * ffn_hidden(d) + shape.n_head + 2) + 3 * d + 1
    else:
        block = 16 * d + shape.n_head
        if shape.experts:
            block += -8 * d + k * (11 * d + 7) + shape.experts + (k + 1 if k > 1 else 0)
        per_token = shape.n_layer * block + 2 * d
    per_rank = batch_tokens // max(1, workers)
    state = 4 * FP32 * shape.n_params_total
    return TrialMemory(state=state // workers if strategy == "fsdp" and workers > 1 else state,
                       activations=FP32 * per_rank * per_token, logits=4 * FP32 * per_rank * shape.vocab_size)


@dataclass(frozen=True)
class Capacity:
    """What the resources offer one sweep. ``None`` means not known before the sweep runs."""

    workers: int | None  # trials running at once
    workers_source: str  # how they were counted, e.g. "2 CPUs / resources.cpus = 1"
    memory: float | None  # bytes one trial may use
    memory_source: str
    flops_per_s: float  # one trial's throughput, C = 6 N D FLOPs per second
    flops_source: str
    no_workers: str = ""  # why workers == 0: the local Ray could never schedule a trial
    node: tuple[float, float] | None = None  # (CPUs, GPUs) of the one node a local Ray has; None: a cluster


def _throughput(spec: SweepSpec) -> tuple[float, str]:
    r = spec.resources
    if r.flops_per_s is not None:
        return r.flops_per_s, "resources.flops_per_s"
    if r.gpus > 0:  # the trainer uses one device, so gpus: 2 trains no faster than gpus: 1
        share = min(r.gpus, 1.0)
        return GPU_FLOPS * share, f"default {GPU_FLOPS:.0e} per GPU x {share:g}"
    threads = max(1, int(r.cpus))  # what TrialFactory gives the trainer
    return CPU_FLOPS_PER_THREAD * threads, f"default {CPU_FLOPS_PER_THREAD:.1e} per CPU thread x {threads}"


def _stated_memory(spec: SweepSpec) -> tuple[float | None, str]:
    m = spec.resources.memory_gb
    return (m * GB, "resources.memory_gb") if m is not None else (None, "")


def _node_memory() -> float | None:
    try:
        return float(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):  # not a POSIX sysconf: unknown
        return None


def _gpus() -> tuple[int, float | None]:
    """(GPUs torch sees, bytes of the first one or None). nvidia-smi rather than torch for the
    memory: querying it through torch would create a CUDA context in the driver process, which
    holds ~0.5 GB of the GPU the trials need for as long as the sweep runs."""
    import torch

    count = torch.cuda.device_count()  # NVML-based; does not initialise CUDA
    if not count or not shutil.which("nvidia-smi"):
        return count, None
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=memory.total", "--format=csv,noheader,nounits"],
                             capture_output=True, text=True, timeout=20, check=True).stdout
        return count, float(out.split()[0]) * 2**20  # MiB
    except (OSError, subprocess.SubprocessError, ValueError, IndexError):
        return count, None


def local_capacity(spec: SweepSpec, num_cpus: int | None = None) -> Capacity:
    """Capacity of the Ray this process starts on this node (``num_cpus``: its --num-cpus)."""
    r = spec.resources
    flops, flops_source = _throughput(spec)
    try:
        cpus = num_cpus or len(os.sched_getaffinity(0))
    except AttributeError:  # no sched_getaffinity (macOS)
        cpus = num_cpus or os.cpu_count() or 1
    workers = math.floor(cpus / r.cpus + 1e-9)
    workers_source = f"{cpus} CPUs / resources.cpus = {r.cpus:g}"
    # A task asking for more than the node has is never scheduled: Ray waits for it forever.
    no_workers = "" if workers else (f"resources.cpus={r.cpus:g}: the local Ray has {cpus} CPUs, so no trial could "
                                     f"ever be scheduled (expected at most {cpus}; or pass --num-cpus, or --address)")
    memory, memory_source = _stated_memory(spec)
    if r.gpus > 0:
        n_gpus, gpu_bytes = _gpus()
        gpu_workers = math.floor(n_gpus / r.gpus + 1e-9)
        workers = min(workers, gpu_workers)
        workers_source += f", {n_gpus} GPUs / resources.gpus = {r.gpus:g}"
        if not gpu_workers:
            no_workers = (f"resources.gpus={r.gpus:g}: torch sees {n_gpus or 'no'} GPU{'s' if n_gpus != 1 else ''} "
                          f"on this machine, so the local Ray could never schedule a trial (expected at most "
                          f"{n_gpus} here, or --address of a cluster with more)")
        if memory is None and gpu_bytes is not None:
            share = min(r.gpus, 1.0)
            memory, memory_source = gpu_bytes * share, f"{share:g} of the GPU's {_bytes(gpu_bytes)}"
        elif memory is None:
            memory_source = "the GPU's memory is unknown (no nvidia-smi): not checked"
    elif memory is None:
        memory = _node_memory()
        memory_source = "this node's memory" if memory is not None else "this node's memory is unknown: not checked"
    n_gpus = _gpus()[0] if r.gpus > 0 or any((b.gpus or 0) > 0 for b in r.by_size) else 0
    return Capacity(workers, workers_source, memory, memory_source, flops, flops_source, no_workers,
                    node=(float(cpus), float(n_gpus)))


def cluster_capacity(spec: SweepSpec) -> Capacity:
    """Capacity of a cluster not joined yet: its size and memory are unknown until it runs, so
    only the stated resources.memory_gb is checked, and the time limit holds the largest trial."""
    flops, flops_source = _throughput(spec)
    memory, memory_source = _stated_memory(spec)
    return Capacity(None, "a cluster of unknown size", memory,
                    memory_source or "a cluster's memory is unknown before it runs; set resources.memory_gb to check it",
                    flops, flops_source)


@dataclass(frozen=True)
class SweepEstimate:
    n_trials: int  # adaptive: at most this many
    total_flops: float  # simulated: nominal, nothing is computed
    largest_flops: float
    seconds: float  # estimated wall time; with unknown workers, the largest trial's (a lower bound)
    capacity: Capacity
    simulated: bool
    adaptive: bool
    time_field: str  # the spec field that sets the time, named when it is refused
    memory: list[tuple[str, TrialMemory]] = field(default_factory=list)  # (trial name, memory), largest first
    memory_field: str = "sweep.model_sizes"
    trial_s: float = 0.0  # simulated: world.duration_s
    # A lab's trainer without resources.flops_per_s: its speed, so the time, is unknown (the
    # default rate is the built-in GPT's), and max_hours is not checked.
    speed_unknown: bool = False
    unplaceable: str = ""  # why a trial could never be placed on the local Ray (_unplaceable)

    def summary(self) -> str:
        """The line printed at the start of every run."""
        c, upto = self.capacity, "up to " if self.adaptive else ""
        if self.simulated:
            what = f"{upto}{self.n_trials} simulated trials ({self.total_flops:.3g} FLOPs simulated, none computed)"
            rate = f"world.duration_s = {self.trial_s:g} s per trial"
        else:
            what = f"{upto}{self.n_trials} trials, {upto}{self.total_flops:.3g} FLOPs (largest {self.largest_flops:.3g})"
            rate = f"~{c.flops_per_s:.2g} FLOPs/s per trial, {c.flops_source}"
        on = f"on {c.workers} workers ({c.workers_source})" if c.workers else f"for the largest trial alone, on {c.workers_source}"
        line = f"Estimate: {what}; ~{_duration(self.seconds)} {on} at {rate}"
        if self.speed_unknown:
            line = (f"Estimate: {what}; time unknown (a lab's trainer: state resources.flops_per_s, the FLOPs/s one "
                    "trial sustains, for a time estimate and the resources.max_hours check)")
        if self.memory:
            mem = _bytes(self.memory[0][1].total)
            line += (f"; largest trial needs ~{mem} of {_bytes(c.memory)} ({c.memory_source})" if c.memory is not None
                     else f"; largest trial needs ~{mem} ({c.memory_source})")
        return line


def estimate_sweep(spec: SweepSpec, factory: TrialFactory, trials: list, capacity: Capacity) -> SweepEstimate:
    """The estimate for ``trials`` (a static sweep's plan), or for the adaptive planner's region.

    ``factory`` is the sweep's :class:`~orchestrator.planning.trials.TrialFactory`: it turns the largest N
    the adaptive region allows into a shape.
    """
    simulated, adaptive = spec.trainer == "simulated", spec.planner == "adaptive"
    shapes: list[tuple[str, GPTShape, int]] = []  # (trial name, shape, its batch in tokens)
    # A batch search may try one step above its centre before it brackets.
    batch_up = spec.tune.factor if "batch_tokens" in spec.tuned else 1.0
    if adaptive:
        a = spec.adaptive
        n_trials, largest = a.max_trials, a.max_flops
        per_rank = largest / factory.placement(a.n_range[1])["workers"]
        total = min(a.flop_budget, a.max_trials * a.max_flops)
        # The largest N the region allows: N <= n_range's maximum, and with D >= dn_min * N and
        # 6 N D <= max_flops, N^2 <= max_flops / (6 dn_min), which is tokens_for_budget(max_flops, dn_min).
        n_max = min(a.n_range[1], math.sqrt(tokens_for_budget(a.max_flops, a.dn_range[0])))
        size = factory.size_for(n_max) if not simulated else None
        if size is not None and size.shape is not None:  # memory is known for the built-in GPT's shapes only
            batch = factory.recipe_at(size, tokens_for_budget(a.max_flops, size.n_params)).batch_tokens
            where = factory.placement(size.n_params)
            shapes = [(f"the largest that adaptive.n_range and max_flops allow (N={n_max:.3g})", size.shape,
                       factory.round_batch(batch * batch_up), where["workers"], where["strategy"], where["gpus"])]
        time_field, memory_field = "adaptive.flop_budget", "adaptive.n_range"
    else:
        flops = [train_flops(t.n_params, t.tokens) for t in trials]
        n_trials, total, largest = len(trials), sum(flops), max(flops, default=0.0)
        if spec.train.reuses:  # stems once, then each point's cooldown (orchestrator.running.reuse)
            from orchestrator.running.reuse import planned_flops

            total, largest = planned_flops(trials)
        if spec.tuned:  # each searched point runs at least tune.initial trials
            up_to = spec.tune.up_to_flops or math.inf
            searched = [f for f in flops if f <= up_to]
            n_trials += (spec.tune.initial - 1) * len(searched)
            total += (spec.tune.initial - 1) * sum(searched)
        seen: set[tuple[GPTShape, int]] = set()
        for t in trials:  # largest compute first (plan_trials): each shape named by its first trial
            batch = factory.round_batch(t.train.batch_tokens * batch_up)
            if t.shape is not None and (t.shape, batch) not in seen:
                seen.add((t.shape, batch))
                shapes.append((t.name, t.shape, batch, t.workers, t.strategy, t.gpus))
        # A trial on k ranks takes 1/k of the time on k slots (linear scaling, an optimistic bound).
        per_rank = max((f / t.workers for f, t in zip(flops, trials)), default=0.0)
        time_field = "sweep.tokens" if isinstance(spec.sweep, GridSweep) else "sweep.budgets"
        memory_field = "sweep.model_sizes"
    if simulated:  # no FLOPs are computed: a simulated trial takes what its world says
        per = spec.world.duration_s
        total_s, longest_s, time_field = n_trials * per, per, "world.duration_s"
    else:
        total_s, longest_s = total / capacity.flops_per_s, min(largest, per_rank) / capacity.flops_per_s
    seconds = longest_s if not capacity.workers else max(total_s / capacity.workers, longest_s)
    if adaptive and not simulated and capacity.workers and longest_s > total_s / capacity.workers:
        time_field = "adaptive.max_flops"
    # On a local Ray's CPUs all of a trial's ranks share the one node's memory: held against it together.
    memory = sorted(((name, _on_node(trial_memory(shape, batch, k, how), k if not gpus and capacity.node else 1))
                     for name, shape, batch, k, how, gpus in shapes), key=lambda nm: -nm[1].total)
    return SweepEstimate(n_trials, total, largest, seconds, capacity, simulated, adaptive, time_field, memory,
                         memory_field, spec.world.duration_s if simulated else 0.0,
                         speed_unknown=spec.external and spec.resources.flops_per_s is None,
                         unplaceable=_unplaceable(spec, factory, trials, capacity))


def _on_node(m: TrialMemory, ranks: int) -> TrialMemory:
    """What ``ranks`` ranks of ``m`` each hold on one node together."""
    return m if ranks == 1 else TrialMemory(m.state * ranks, m.activations * ranks, m.logits * ranks)


def _unplaceable(spec: SweepSpec, factory: TrialFactory, trials: list, capacity: Capacity) -> str:
    """Why a trial could never be placed on a local Ray's one node ("" if every one can): its
    ranks x (CPUs, GPUs) beyond the node's. A cluster's nodes are unknown before it runs: the
    driver's ledger then says so when a trial waits for more than the cluster has."""
    if capacity.node is None:
        return ""
    cpus, gpus = capacity.node
    if spec.planner == "adaptive":  # the largest size the region allows stands for its trials
        n = spec.adaptive.n_range[1]
        asks = [(f"N={n:.3g} (adaptive.n_range's largest)", factory.placement(n))]
    else:
        asks = [(t.name, {"workers": t.workers, "cpus": t.cpus, "gpus": t.gpus}) for t in trials]
    for name, p in asks:
        k, need_cpu, need_gpu = p["workers"], p["workers"] * p["cpus"], p["workers"] * p["gpus"]
        if need_cpu > cpus + 1e-9 or need_gpu > gpus + 1e-9:
            ranks = f"{k} ranks x " if k > 1 else ""
            gpu_ask = f" and {p['gpus']:g} GPUs" if p["gpus"] else ""
            return (f"resources: trial {name!r} needs {ranks}{p['cpus']:g} CPUs{gpu_ask} = {need_cpu:g} CPUs"
                    f"{f' and {need_gpu:g} GPUs' if need_gpu else ''}, but the local Ray has {cpus:g} CPUs and "
                    f"{gpus:g} GPUs, so it could never run (expected fewer workers or resources per rank in resources "
                    "or resources.by_size; or --num-cpus, or --address of a cluster)")
    return ""


def check(est: SweepEstimate, spec: SweepSpec, allow_long: bool = False) -> None:
    """Raise UserError (one line) if a trial can never be scheduled, one does not fit in the
    memory a trial has, or the sweep would take longer than resources.max_hours."""
    c = est.capacity
    if c.workers == 0:
        raise UserError(c.no_workers)
    if est.unplaceable:
        raise UserError(est.unplaceable)
    over = [(name, m) for name, m in est.memory if c.memory is not None and m.total > c.memory]
    if over:
        name, m = over[0]
        where = est.memory_field if m.state >= m.activations + m.logits else "train.batch_tokens"
        more = f" (and {len(over) - 1} more model sizes)" if len(over) > 1 else ""
        raise UserError(
            f"{where}: trial {name!r}{more} needs ~{_bytes(m.total)} (parameters, gradients and AdamW state "
            f"{_bytes(m.state)}, activations {_bytes(m.activations)}, logits {_bytes(m.logits)} at "
            f"train.batch_tokens={spec.train.batch_tokens if isinstance(spec.train.batch_tokens, int) else 'its rule'}"
            f"), but one trial has {_bytes(c.memory)} "
            f"({c.memory_source}); expected trials that fit: lower the model size or train.batch_tokens "
            f"(or set resources.memory_gb if a trial has more)")
    limit = spec.resources.max_hours
    if limit is None or allow_long or est.speed_unknown or est.seconds <= limit * 3600:
        return
    if est.simulated:
        what = f"{est.n_trials} simulated trials of {spec.world.duration_s:g} s"
    elif c.workers:
        what = f"{est.total_flops:.2g} FLOPs at ~{c.flops_per_s:.2g} FLOPs/s per trial ({c.flops_source})"
    else:
        what = (f"the largest trial's {est.largest_flops:.2g} FLOPs at ~{c.flops_per_s:.2g} FLOPs/s "
                f"({c.flops_source})")
    on = f"on {c.workers} worker{'s' if c.workers > 1 else ''}" if c.workers else "on any number of workers"
    raise UserError(f"{est.time_field}: estimated {est.seconds / 3600:.3g} hours for {what} {on}; beyond "
                    f"resources.max_hours = {limit:g} (expected at most that: raise it, set it to null, "
                    f"or pass --allow-long)")


def check_submission(spec: SweepSpec, cache_dir: str = "", allow_long: bool = False) -> str:
    """Plan and check ``spec`` for a cluster (``scalesweep submit``); returns the estimate's line.

    Only what is knowable here is checked: the FLOPs and time (the largest trial against
    resources.max_hours; the cluster's size is unknown) and memory against a stated
    resources.memory_gb. The job's own ``scalesweep run`` checks again on the cluster.
    """
    from orchestrator.planning.variants import plan_variants, variant_factories

    try:
        factories = variant_factories(spec, cache_dir)
    except UserError:
        # The data may exist only on the cluster's nodes (specs/gpu_sweep.yaml): shapes need
        # just its vocabulary, known for bytes and stated for token files; else no estimate.
        d = spec.data
        vocab = BYTE_VOCAB if d.tokens is None else d.vocab_size
        if vocab is None:
            return (f"Estimate: none here ({d.tokens} is not readable on this machine and data.vocab_size is not "
                    "set); the job checks the sweep when it starts")
        factories = variant_factories(spec, cache_dir, vocab_size=vocab)
    factory = next(iter(factories.values()))  # the baseline's
    static = plan_variants(factories) if spec.planner == "static" else []
    est = estimate_sweep(spec, factory, static, cluster_capacity(spec))
    check(est, spec, allow_long)
    return est.summary()


def _bytes(x: float) -> str:
    for unit, scale in (("PB", 1e15), ("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if x >= scale:
            return f"{x / scale:.3g} {unit}"
    return f"{x:.0f} B"


def _duration(s: float) -> str:
    if s < 120:
        return f"{s:.0f}s"
    if s < 2 * 3600:
        return f"{s / 60:.0f} min"
    return f"{s / 3600:.3g} hours"
