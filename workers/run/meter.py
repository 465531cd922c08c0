"""What a trial used: its device, GPU-seconds, throughput, MFU and energy, as columns of its row.

:class:`TrialMeter` is started by workers.run.run_trial before the trainer and read when it
returns; the trainer's context reads it at each progress row for the steps table's cumulative
``energy_j``. Energy comes from the best source there is (:class:`EnergySource`):

- ``nvml``: the GPUs' energy counters (workers.run.counters), on a trial that holds GPUs;
- ``rapl``: the CPU packages' counters, on a CPU trial where they can be read;
- ``estimated``: rated power (workers.run.devices; ``resources.watts``) x utilisation x wall
  time. On a CPU the utilisation is the process's CPU time (its children's too: a command
  trainer) over wall x threads held; on a GPU without a counter it is unknown and taken as 1 (an
  upper bound). ``energy_note`` states the rated power and utilisation used;
- ``unavailable``: no counter and no rated power (an unknown GPU without NVML), or a simulated
  trial, which trains nothing.

A device shared with other trials is attributed by the share this trial holds: a GPU packed with
``resources.gpus: 0.25`` gets a quarter of the counter's increase, a CPU package the trial's
threads over the node's. ``energy_note`` says so. Measuring never fails a trial: a counter that
stops working mid-trial makes the row ``estimated``, with the reason in the note.
"""

from __future__ import annotations

import enum
import math
import os
import resource
import time

from workers.flops import model_flops_per_token
from workers.run.counters import CounterUnavailable, NvmlCounter, RaplCounter
from workers.run.devices import DeviceInfo, device_info

__all__ = ["EnergySource", "TrialMeter", "flops_per_token"]


class EnergySource(str, enum.Enum):
    NVML = "nvml"
    RAPL = "rapl"
    ESTIMATED = "estimated"
    UNAVAILABLE = "unavailable"


def flops_per_token(cfg, n_params: int) -> float:
    """Hardware FLOPs per trained token of ``cfg``'s model (workers.flops.model_flops_per_token):
    a GPT shape's matmul parameters and attention term; a lab's model its N, with the attention
    term where its size settings name n_layer, d_model and seq_len."""
    shape = cfg.shape
    if shape is not None:
        from workers.gpt.arch import matmul_param_count

        return model_flops_per_token(matmul_param_count(shape), shape.n_layer, shape.d_model, shape.seq_len)
    model = cfg.model or {}
    dims = [model.get(k) for k in ("n_layer", "d_model", "seq_len")]
    if all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in dims):
        return model_flops_per_token(n_params, *dims)
    return model_flops_per_token(n_params, 0, 0, 0)


def _cpu_seconds() -> float:
    """CPU time of this process and its waited-for children (a command trainer's subprocess)."""
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


class TrialMeter:
    """Measures one attempt of a trial (see the module docstring); :meth:`start` first. Never
    raises: whatever fails to measure is said in ``energy_note``."""

    def __init__(self, cfg, rapl_root: str | None = None):
        self.cfg = cfg
        self.simulated = cfg.trainer == "simulated"
        self.gpus = float(getattr(cfg, "gpus", 0.0) or 0.0)
        self.cpus = float(max(1, cfg.threads))
        # A trial on several ranks (workers.run.distributed) is recorded by rank 0: it holds ranks
        # x its own devices, and its energy is rank 0's times the ranks (said in the note).
        self.ranks = max(1, int(getattr(cfg, "workers", 1) or 1))
        self.counter = None
        self.reason = ""  # why no counter was used
        self._rapl_root = rapl_root
        self._t0 = self._cpu0 = 0.0
        self.device = self._device()
        self.source = EnergySource.UNAVAILABLE if self.simulated else EnergySource.ESTIMATED

    def _device(self) -> DeviceInfo:
        """A trial that holds GPUs ran on them, whatever its trainer imports: they are named
        through NVML (never through torch, which would initialise CUDA here), "cuda" if it cannot."""
        peak, watts = getattr(self.cfg, "peak_flops", None), getattr(self.cfg, "watts", None)
        if self.gpus <= 0 or self.cfg.device == "cpu" or self.simulated:
            return device_info("cpu", peak_flops=peak, watts=watts)
        name = ""
        try:
            self.counter = NvmlCounter(math.ceil(self.gpus)).open()
            name = self.counter.names[0]
        except CounterUnavailable as e:
            self.reason = str(e)
        except Exception as e:  # measuring must never fail a trial
            self.reason = f"{type(e).__name__}: {e}"
        return device_info("cuda", name, peak, watts)

    @property
    def share(self) -> float:
        """The fraction of the measured devices' energy that is this trial's."""
        if self.device.kind == "cuda":
            return self.gpus / max(1, math.ceil(self.gpus))
        return min(1.0, self.cpus / (os.cpu_count() or 1))

    def start(self) -> "TrialMeter":
        self._t0, self._cpu0 = time.perf_counter(), _cpu_seconds()
        if self.simulated:
            return self
        try:
            if self.device.kind == "cpu":
                self.counter = RaplCounter(self._rapl_root) if self._rapl_root else RaplCounter()
            if self.counter is not None:
                self.counter.start()
                self.source = EnergySource.NVML if self.device.kind == "cuda" else EnergySource.RAPL
        except CounterUnavailable as e:
            self.counter, self.reason = None, str(e)
        except Exception as e:  # measuring must never fail a trial
            self.counter, self.reason = None, f"{type(e).__name__}: {e}"
        if self.counter is None and self.device.watts is None:
            self.source = EnergySource.UNAVAILABLE
        return self

    def energy_j(self) -> float | None:
        """This attempt's joules so far, attributed by share, all ranks' (None: unavailable)."""
        if self.counter is not None:
            try:
                return self.counter.sample() * self.share * self.ranks
            except Exception as e:  # a counter that stopped working: estimate from here on
                self._drop_counter(str(e))
        if self.source is not EnergySource.ESTIMATED:
            return None
        return self._rated_w() * self._utilisation() * (time.perf_counter() - self._t0) * self.ranks

    def _drop_counter(self, reason: str) -> None:
        try:
            self.counter.halt()
        except Exception:  # already broken: nothing more to stop
            pass
        self.counter, self.reason = None, reason
        self.source = EnergySource.ESTIMATED if self.device.watts is not None else EnergySource.UNAVAILABLE

    def _units(self) -> float:
        return self.gpus if self.device.kind == "cuda" else self.cpus

    def _rated_w(self) -> float:
        return float(self.device.watts) * self._units()

    def _utilisation(self) -> float:
        if self.device.kind == "cuda":
            return 1.0  # unknown without NVML: rated power is an upper bound
        wall = time.perf_counter() - self._t0
        return min(1.0, max(0.0, (_cpu_seconds() - self._cpu0) / (wall * self.cpus))) if wall > 0 else 0.0

    def _note(self) -> str:
        if self.simulated:
            return "simulated trial: nothing was trained"
        units = f"{self.gpus:g} GPU" if self.device.kind == "cuda" else f"{self.cpus:g} CPU thread"
        shared = ""
        if self.share < 1:
            whole = f"{math.ceil(self.gpus)} GPU" if self.device.kind == "cuda" else f"{os.cpu_count()} CPU threads"
            shared = f" x {self.share:.3g} (this trial's share: {units}s of {whole})"
        if self.source is EnergySource.NVML:
            return f"NVML energy counter{shared}"
        if self.source is EnergySource.RAPL:
            return f"RAPL package counters{shared}"
        why = f"; {self.reason}" if self.reason else ""
        if self.source is EnergySource.UNAVAILABLE:
            return f"no counter and no rated power for {self.device.name} (set resources.watts){why}"
        util = ("utilisation unknown, taken as 1: an upper bound" if self.device.kind == "cuda"
                else f"x {self._utilisation():.2f} utilisation (CPU time / wall x threads)")
        return f"{units}s x {self.device.watts:g} W rated ({self.device.watts_source}) {util}{why}"

    @property
    def gpu_rate(self) -> float:
        """GPUs this attempt holds, all ranks' (0 on CPU)."""
        return self.gpus * self.ranks if self.device.kind == "cuda" else 0.0

    def stop(self, wall_s: float, tokens: int, n_params: int, energy_before: float = 0.0,
             gpu_seconds: float | None = None) -> dict:
        """The row's columns after training ``tokens`` tokens (this row's own) in ``wall_s`` seconds
        (earlier attempts' included, as their ``energy_before`` joules are). ``gpu_seconds``: those
        the trial held, each attempt at its own GPU count (default: ``wall_s`` at this attempt's).
        Never raises: a failure to measure leaves the energy unavailable and says why."""
        try:
            if self.counter is not None:
                self.counter.halt()  # the poller first: the last read is then the final one
            energy = self.energy_j()
        except Exception as e:  # measuring must never lose a trial's row
            energy, self.source, self.reason = None, EnergySource.UNAVAILABLE, f"{type(e).__name__}: {e}"
        try:
            fpt = flops_per_token(self.cfg, n_params)
        except Exception:  # a lab's odd size settings: no FLOPs figure rather than no row
            fpt = None
        tps = tokens / wall_s if wall_s > 0 and tokens > 0 and not self.simulated else None
        peak = self.device.peak_flops
        ranks = self.ranks
        mfu = tps * fpt / (peak * self._units() * ranks) if tps and fpt and peak else None
        gpu = self.device.kind == "cuda"
        note = self._note() + (f"; rank 0's measure x {ranks} ranks" if ranks > 1 and energy is not None else "")
        return {"device": "simulated" if self.simulated else self.device.name, "cpus": self.cpus * ranks,
                "gpu_count": self.gpu_rate,
                "gpu_seconds": (wall_s * self.gpu_rate if gpu_seconds is None else gpu_seconds) if gpu else 0.0,
                "tokens_per_s": tps, "energy_j": None if energy is None else energy_before + energy,
                "energy_source": self.source.value, "energy_note": note, "flops_per_token": fpt,
                "peak_flops": peak, "mfu": mfu}
