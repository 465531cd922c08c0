"""Energy counters a trial can read: NVIDIA's NVML total-energy counter and Linux's RAPL counters.

Both are *counters* of energy since some origin, read at the trial's start and end (and in
between), so no power sample is missed: power sampled at intervals misses most of the time on
recent GPUs, whose power readings are averages over short windows updated a few times a second
(Yang et al. 2024, "Part-time Power Measurements: nvidia-smi's Lack of Attention"; Zeus measures
with the counter for that reason).

- **NVML** (``nvmlDeviceGetTotalEnergyConsumption``, Volta and later): millijoules since the
  driver loaded, 64 bits: it does not wrap. Read through nvidia-ml-py, NVIDIA's own bindings. A
  GPU is found by the UUID CUDA reports, since NVML numbers every GPU of the node while CUDA
  numbers those in CUDA_VISIBLE_DEVICES (which Ray sets per task).
- **RAPL** (``/sys/class/powercap/intel-rapl:N/energy_uj``, Intel, and AMD since Zen): microjoules
  per CPU package, wrapping at ``max_energy_range_uj`` (about 262 kJ: 20 minutes at 200 W), so it
  is read by a background thread often enough never to wrap twice between reads
  (:data:`RAPL_POLL_S`). Only package domains are summed (their cores and uncore); DRAM
  domains are left out. Since Linux 5.10 ``energy_uj`` is readable by root only (CVE-2020-8694):
  a present but unreadable counter is reported as such, and the trial's energy is estimated.

Every reader raises :class:`CounterUnavailable` with a reason rather than failing a trial.
"""

from __future__ import annotations

import glob
import os
import threading

__all__ = ["CounterUnavailable", "NvmlCounter", "RAPL_ROOT", "RAPL_POLL_S", "RaplCounter", "wrapped_delta"]

RAPL_ROOT = "/sys/class/powercap"
# Between reads of a RAPL counter. Its range is 2^32 uJ (4295 J) on some parts and ~262 kJ on
# others; 4295 J wraps in 11 s at 400 W, so poll well inside that.
RAPL_POLL_S = 5.0


class CounterUnavailable(RuntimeError):
    """No counter can be read here; the message says why (shown in the trial's energy_note)."""


def wrapped_delta(before: int, after: int, max_range: int) -> int:
    """Counter increase from ``before`` to ``after`` for a counter that wraps to 0 after
    ``max_range``: at most one wrap between the two reads (the poller ensures it)."""
    return after - before if after >= before else after + max_range - before


class RaplCounter:
    """Joules used by the CPU packages since :meth:`start`, summed over packages, wrap-safe.

    ``root`` is the powercap directory (a test writes a sysfs-shaped one). :meth:`start` raises
    CounterUnavailable if there is no package domain, or if one cannot be read."""

    def __init__(self, root: str = RAPL_ROOT, poll_s: float = RAPL_POLL_S):
        self.root, self.poll_s = root, poll_s
        self.domains = self._domains()
        self._last: dict[str, int] = {}
        self._uj = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _domains(self) -> list[tuple[str, int]]:
        """(energy_uj path, max range) of each package domain: intel-rapl:N, not its subzones."""
        out = []
        for zone in sorted(glob.glob(os.path.join(self.root, "intel-rapl:*"))):
            if ":" in os.path.basename(zone)[len("intel-rapl:"):]:
                continue  # intel-rapl:N:M is a subzone (core, uncore, dram) of package N
            try:
                with open(os.path.join(zone, "name")) as f:
                    if not f.read().strip().startswith("package"):
                        continue  # psys and others: not a CPU package
                with open(os.path.join(zone, "max_energy_range_uj")) as f:
                    max_range = int(f.read().strip())
            except (OSError, ValueError):
                continue
            out.append((os.path.join(zone, "energy_uj"), max_range))
        return out

    def _read(self) -> dict[str, int]:
        values = {}
        for path, _ in self.domains:
            try:
                with open(path) as f:
                    values[path] = int(f.read().strip())
            except PermissionError:
                raise CounterUnavailable(f"RAPL counter {path} is not readable by this user (root only since "
                                         "Linux 5.10)") from None
            except (OSError, ValueError) as e:
                raise CounterUnavailable(f"RAPL counter {path} unreadable ({e})") from None
        return values

    def start(self, thread: bool = True) -> None:
        if not self.domains:
            raise CounterUnavailable(f"no RAPL package domains under {self.root}")
        self._last, self._uj = self._read(), 0
        if thread:
            self._thread = threading.Thread(target=self._poll, name="scalesweep-rapl", daemon=True)
            self._thread.start()

    def _poll(self) -> None:
        while not self._stop.wait(self.poll_s):
            try:
                self.sample()
            except CounterUnavailable:
                return  # the final read says so

    def sample(self) -> float:
        """Read every package now; joules since start. The read is under the lock with the
        update: a read older than the last one applied would look like a wrap (+ a whole range)."""
        with self._lock:
            values = self._read()
            for path, max_range in self.domains:
                self._uj += wrapped_delta(self._last[path], values[path], max_range)
            self._last = values
            return self._uj / 1e6

    def stop(self) -> float:
        """The poller stopped, then joules since start (a last read)."""
        self.halt()
        return self.sample()

    def halt(self) -> None:
        """Stop the poller (idempotent); nothing is read."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=max(1.0, 2 * self.poll_s))


class NvmlCounter:
    """Joules used by the GPUs this process was given since :meth:`start`, and their names.

    The GPUs are those CUDA_VISIBLE_DEVICES names (Ray sets it per task: NVML indices or UUIDs),
    else every GPU of the node; they are found through NVML alone, so measuring never initialises
    CUDA in the worker (a trainer that forks would inherit it)."""

    def __init__(self, count: int):
        self.count = count
        self._handles: list = []
        self._start: list[int] = []
        self.names: list[str] = []

    def open(self) -> "NvmlCounter":
        """Find the GPUs (CounterUnavailable: no NVML, no GPU, or none visible)."""
        try:
            import pynvml  # nvidia-ml-py
        except ImportError:
            raise CounterUnavailable("nvidia-ml-py is not installed") from None
        self._nvml = pynvml
        try:
            pynvml.nvmlInit()
            visible = os.environ.get("CUDA_VISIBLE_DEVICES")
            keys = [k.strip() for k in visible.split(",") if k.strip()] if visible is not None \
                else [str(i) for i in range(pynvml.nvmlDeviceGetCount())]
            if not keys:
                raise CounterUnavailable("CUDA_VISIBLE_DEVICES names no GPU")
            self._handles = [self._handle(k) for k in keys[:max(1, self.count)]]
            self.names = [_text(pynvml.nvmlDeviceGetName(h)) for h in self._handles]
        except pynvml.NVMLError as e:
            raise CounterUnavailable(f"NVML unavailable ({e})") from None
        return self

    def _handle(self, key: str):
        if key.isdigit():
            return self._nvml.nvmlDeviceGetHandleByIndex(int(key))
        return self._nvml.nvmlDeviceGetHandleByUUID(key if key.startswith(("GPU-", "MIG-")) else f"GPU-{key}")

    def start(self) -> None:
        if not self._handles:
            self.open()
        try:
            self._start = [self._nvml.nvmlDeviceGetTotalEnergyConsumption(h) for h in self._handles]
        except self._nvml.NVMLError as e:
            raise CounterUnavailable(f"NVML energy counter unavailable ({e}; it needs a Volta or newer GPU)") from None

    def sample(self) -> float:
        """Joules since start, summed over the GPUs."""
        try:
            now = [self._nvml.nvmlDeviceGetTotalEnergyConsumption(h) for h in self._handles]
        except self._nvml.NVMLError as e:
            raise CounterUnavailable(f"NVML energy counter failed mid-trial ({e})") from None
        return sum(b - a for a, b in zip(self._start, now)) / 1e3

    def stop(self) -> float:
        return self.sample()

    def halt(self) -> None:
        pass


def _text(name) -> str:
    return name.decode() if isinstance(name, bytes) else str(name)
