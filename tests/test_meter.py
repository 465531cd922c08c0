"""What a trial used (workers.run.meter, counters, devices): the RAPL reader on a sysfs-shaped
directory this test writes (a parser test: this machine has no readable RAPL, and no fake stands
in for a real counter in a trial), the estimate's arithmetic, and the row a real CPU trial gets.

No GPU test here runs without NVML: the one that reads a real GPU's counter is marked and skips."""

from __future__ import annotations

import dataclasses
import os
import time

import pytest

from workers.config import DataConfig, TrainConfig, TrialConfig, WorldConfig
from workers.gpt.arch import matmul_param_count, shape_for_params
from workers.flops import model_flops_per_token
from workers.run import run_trial
from workers.run.counters import CounterUnavailable, RaplCounter, wrapped_delta
from workers.run.devices import CPU_WATTS_PER_THREAD, device_info, lookup
from workers.run.meter import EnergySource, TrialMeter
from workers.store import ResultStore, TrialStatus


def _zone(root, name, kind, energy, max_range):
    os.makedirs(root / name)
    (root / name / "name").write_text(kind + "\n")
    (root / name / "energy_uj").write_text(f"{energy}\n")
    (root / name / "max_energy_range_uj").write_text(f"{max_range}\n")


@pytest.fixture
def powercap(tmp_path):
    """Two packages, a core subzone and a psys zone, shaped as /sys/class/powercap."""
    root = tmp_path / "powercap"
    _zone(root, "intel-rapl:0", "package-0", 999_000_000, 1_000_000_000)
    _zone(root, "intel-rapl:0:0", "core", 5, 1_000_000_000)  # a subzone of package 0: inside it
    _zone(root, "intel-rapl:1", "package-1", 10_000_000, 1_000_000_000)
    _zone(root, "intel-rapl:2", "psys", 0, 1_000_000_000)  # the platform: not a CPU package
    return root


def test_rapl_parser_reads_packages_only_and_survives_wrap_around(powercap):
    rapl = RaplCounter(str(powercap))
    assert [os.path.basename(os.path.dirname(p)) for p, _ in rapl.domains] == ["intel-rapl:0", "intel-rapl:1"]
    rapl.start(thread=False)
    # package 0 wraps past its range (999 J -> 1000 J = 0 -> 2 J: 3 J used), package 1 uses 5 J
    (powercap / "intel-rapl:0" / "energy_uj").write_text("2000000\n")
    (powercap / "intel-rapl:1" / "energy_uj").write_text("15000000\n")
    (powercap / "intel-rapl:0:0" / "energy_uj").write_text("900000000\n")  # ignored
    assert rapl.sample() == pytest.approx(8.0)
    (powercap / "intel-rapl:0" / "energy_uj").write_text("4000000\n")
    assert rapl.stop() == pytest.approx(10.0)


def test_wrapped_delta():
    assert wrapped_delta(10, 25, 100) == 15
    assert wrapped_delta(90, 5, 100) == 15
    assert wrapped_delta(7, 7, 100) == 0


def test_rapl_absent_or_unreadable_is_a_reason_not_an_error(tmp_path, powercap):
    with pytest.raises(CounterUnavailable, match="no RAPL package domains"):
        RaplCounter(str(tmp_path / "nothing")).start()
    (powercap / "intel-rapl:1" / "energy_uj").unlink()
    (powercap / "intel-rapl:1" / "energy_uj").mkdir()  # unreadable as a number, even by root
    with pytest.raises(CounterUnavailable, match="intel-rapl:1"):
        RaplCounter(str(powercap)).start(thread=False)


def test_rapl_poller_accumulates_between_reads(powercap):
    rapl = RaplCounter(str(powercap), poll_s=0.01)
    rapl.start()
    for uj in (999_500_000, 200_000_000, 600_000_000):  # 0.5 J, a wrap (201 J), 400 J
        (powercap / "intel-rapl:0" / "energy_uj").write_text(f"{uj}\n")
        time.sleep(0.1)
    assert rapl.stop() == pytest.approx(601.0)


def test_rapl_reads_from_two_threads_never_look_like_a_wrap(powercap):
    """The poller and the trainer's progress rows read concurrently: an older read applied after
    a newer one would count a whole range (1000 J here) that was never used."""
    import threading

    path = powercap / "intel-rapl:1" / "energy_uj"
    rapl = RaplCounter(str(powercap), poll_s=0.0005)
    rapl.start()
    done = threading.Event()

    def climb():
        for uj in range(10_000_000, 10_500_000, 1000):  # 0.5 J in 500 steps, each written atomically
            tmp = path.with_suffix(".tmp")
            tmp.write_text(f"{uj}\n")
            os.replace(tmp, path)
        done.set()

    writer = threading.Thread(target=climb)
    writer.start()
    while not done.is_set():
        rapl.sample()
    writer.join()
    assert rapl.stop() == pytest.approx(0.499, abs=1e-9)


def test_device_table_most_specific_name_first():
    assert lookup("NVIDIA H100 PCIe") == (756e12, 350.0)
    assert lookup("NVIDIA H100 80GB HBM3") == (989e12, 700.0)
    assert lookup("NVIDIA A100-SXM4-80GB")[0] == 312e12
    assert lookup("Some Future GPU") is None
    assert device_info("cuda", "Some Future GPU").peak_flops is None
    cpu = device_info("cpu")
    assert cpu.name == "cpu" and cpu.peak_flops is None and cpu.watts == CPU_WATTS_PER_THREAD
    assert device_info("cpu", peak_flops=5e10).peak_flops == 5e10
    assert device_info("cuda", "NVIDIA L4", watts=60.0).watts == 60.0


def _cfg(root, cache_dir, **kw):
    shape = shape_for_params(4e3, 256, 32)
    base = TrialConfig(trial_id="m0", name="meter", sweep="unit", shape=shape, tokens=256 * 12, seed=0, budget=0.0,
                       train=TrainConfig(batch_tokens=256, n_evals=1, log_every=4),
                       data=DataConfig(builtin="python-stdlib", eval_tokens=1024, block_tokens=1024),
                       results=str(root), cache_dir=cache_dir, device="cpu")
    return dataclasses.replace(base, **kw)


def test_rapl_meter_attributes_the_trials_share_of_the_package(tmp_path, powercap, cache_dir):
    meter = TrialMeter(_cfg(tmp_path, cache_dir), rapl_root=str(powercap)).start()
    assert meter.source is EnergySource.RAPL
    (powercap / "intel-rapl:1" / "energy_uj").write_text("30000000\n")  # 20 J on the node
    row = meter.stop(wall_s=2.0, tokens=1000, n_params=4000)
    share = min(1.0, 1 / os.cpu_count())
    assert row["energy_source"] == "rapl" and row["energy_j"] == pytest.approx(20.0 * share)
    if share < 1:
        assert "share" in row["energy_note"]


def test_estimate_without_a_counter_states_its_rated_power(tmp_path, cache_dir):
    meter = TrialMeter(_cfg(tmp_path, cache_dir, watts=10.0), rapl_root=str(tmp_path / "none")).start()
    t0, cpu0 = time.perf_counter(), time.process_time()
    while time.perf_counter() - t0 < 0.3:  # busy, as far as a loaded machine lets it be
        sum(range(1000))
    busy = time.process_time() - cpu0
    row = meter.stop(wall_s=0.3, tokens=300, n_params=4000)
    assert row["energy_source"] == "estimated"
    assert "10 W rated (resources.watts)" in row["energy_note"] and "no RAPL" in row["energy_note"]
    wall = time.perf_counter() - t0
    # 10 W x utilisation x wall: 10 W per second of CPU time the trial used (at least the loop's)
    assert 0.9 * 10.0 * busy < row["energy_j"] <= 10.0 * wall * 1.05
    assert row["device"] == "cpu" and row["gpu_count"] == 0 and row["gpu_seconds"] == 0
    assert row["mfu"] is None and row["peak_flops"] is None  # no peak on a CPU unless stated
    assert row["tokens_per_s"] == pytest.approx(1000.0)


def test_mfu_against_a_stated_peak(tmp_path, cache_dir):
    cfg = _cfg(tmp_path, cache_dir, peak_flops=1e9, threads=2)
    row = TrialMeter(cfg).start().stop(wall_s=4.0, tokens=8000, n_params=cfg.n_params)
    shape = cfg.shape
    fpt = model_flops_per_token(matmul_param_count(shape), shape.n_layer, shape.d_model, shape.seq_len)
    assert row["flops_per_token"] == fpt
    assert row["mfu"] == pytest.approx(2000.0 * fpt / (1e9 * 2))


def test_a_trial_holding_gpus_is_a_gpu_trial_even_where_nvml_cannot_name_it(tmp_path, cache_dir):
    """No fake GPU: on this machine NVML finds none, and the row says so instead of passing the
    trial off as a CPU one (its GPU-seconds are what it held)."""
    cfg = _cfg(tmp_path, cache_dir, gpus=0.5, device="cuda")
    row = TrialMeter(cfg).start().stop(wall_s=10.0, tokens=1000, n_params=cfg.n_params)
    assert row["gpu_count"] == 0.5 and row["gpu_seconds"] == 5.0 and row["device"] != "cpu"
    if not os.path.exists("/dev/nvidiactl"):
        assert row["energy_source"] == "unavailable" and "NVML" in row["energy_note"]
        rated = TrialMeter(_cfg(tmp_path, cache_dir, gpus=0.5, device="cuda", watts=300.0)).start()
        est = rated.stop(wall_s=1.0, tokens=10, n_params=cfg.n_params)
        assert est["energy_source"] == "estimated" and "upper bound" in est["energy_note"]


def test_gpu_seconds_carry_across_a_resume_on_other_ranks(tmp_path, cache_dir):
    """A trial checkpointed on 1 GPU and resumed on 4 ranks of 1 GPU holds 1 GPU, then 4: its
    GPU-seconds count each attempt at its own GPUs (the wall time at today's count would not).
    The GPUs are what the trial was given to hold; nothing here runs on one."""
    from workers.trainers.interface import Context
    from workers.trainers.loading import trial_for

    cfg = _cfg(tmp_path, cache_dir, gpus=1.0, device="cuda")
    first = Context(trial_for(cfg), ResultStore(str(tmp_path)), None, TrialMeter(cfg).start())
    time.sleep(0.2)
    first.report(1, 256, train_loss=5.0)
    first.save_checkpoint(b"state")
    held = first.gpu_seconds()
    assert 0.2 <= held < 0.2 + 0.5
    four = dataclasses.replace(cfg, workers=4)
    meter = TrialMeter(four).start()
    second = Context(trial_for(four), ResultStore(str(tmp_path)), None, meter)
    assert second.load_checkpoint() == b"state"
    time.sleep(0.2)
    row = meter.stop(second.wall_s(), 256, cfg.n_params, second.energy_before, second.gpu_seconds())
    attempt = second.wall_s() - held  # the second attempt's wall time (the first's carried in wall_s)
    assert row["gpu_count"] == 4.0
    assert row["gpu_seconds"] == pytest.approx(held + 4 * attempt, rel=0.05)
    assert row["gpu_seconds"] < 4 * second.wall_s() * 0.9  # not the whole wall time at 4 GPUs


def test_simulated_trial_has_no_energy(tmp_path):
    cfg = TrialConfig(trial_id="s0", name="sim", sweep="unit", shape=None, tokens=10**9, seed=0, budget=1e17,
                      train=TrainConfig(), data=None, results=str(tmp_path), trainer="simulated", size_n=10**7,
                      world=WorldConfig.model_validate({"law": {"E": 1.7, "A": 400, "B": 400, "alpha": 0.3, "beta": 0.3}}))
    row = run_trial(cfg).row
    assert row["device"] == "simulated" and row["energy_source"] == "unavailable"
    assert row["energy_j"] is None and row["tokens_per_s"] is None and row["mfu"] is None


def test_a_real_cpu_trial_records_what_it_used(tmp_path, cache_dir):
    """A trial of the built-in GPT on this machine: every usage column, none of them a GPU figure."""
    result = run_trial(_cfg(tmp_path, cache_dir))
    assert result.status is TrialStatus.COMPLETED
    row = result.row
    assert row["device"] == "cpu" and row["cpus"] == 1 and row["gpu_count"] == 0 and row["gpu_seconds"] == 0
    assert row["energy_source"] in ("rapl", "estimated")  # RAPL only where the node lets this user read it
    assert row["energy_j"] > 0 and row["mfu"] is None
    assert row["tokens_per_s"] == pytest.approx(row["tokens"] / row["wall_s"])
    stored = ResultStore(str(tmp_path)).read_table("trials").to_pylist()[0]
    assert stored["energy_source"] == row["energy_source"] and stored["energy_note"]
    steps = ResultStore(str(tmp_path)).read_table("steps").to_pandas()
    assert steps["energy_j"].is_monotonic_increasing and steps["energy_j"].iloc[-1] <= row["energy_j"]


def test_failed_trial_still_records_its_usage(tmp_path, cache_dir):
    cfg = _cfg(tmp_path, cache_dir, data=DataConfig(text=str(tmp_path / "missing.txt")))
    row = run_trial(cfg).row
    assert row["status"] == "failed" and row["energy_source"] in ("rapl", "estimated") and row["device"] == "cpu"


@pytest.mark.skipif(not os.path.exists("/dev/nvidiactl"), reason="no NVIDIA GPU on this machine (NVML needs one)")
def test_nvml_counter_on_a_real_gpu():  # pragma: no cover - runs where a GPU is lent
    torch = pytest.importorskip("torch")
    pytest.importorskip("pynvml")
    from workers.run.counters import NvmlCounter

    counter = NvmlCounter(1)
    counter.start()
    assert counter.names and counter.names[0]
    x = torch.randn(4096, 4096, device="cuda")
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < 1.0:
        x = x @ x
        x = x / x.norm()
    torch.cuda.synchronize()
    assert counter.stop() > 10.0  # a busy GPU draws far more than 10 W
