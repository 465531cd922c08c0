"""What a trial ran on: the device's name, its peak FLOP/s and its rated power.

MFU (model FLOPs utilisation, Chowdhery et al. 2022, "PaLM", appendix B) is achieved model FLOP/s
over the device's peak. The peak is the dense (not 2:4-sparse) bf16 tensor-core rate of the
vendor's datasheet, the figure PaLM, torchtitan and nanoGPT divide by; a GPU without bf16 (V100,
T4) gets its fp16 tensor-core rate. The rated power is the board's power limit (TDP), used only to
*estimate* energy where no counter can be read (workers.run.counters), and labelled as such.

Both are looked up by the name CUDA reports (``torch.cuda.get_device_name``), most specific
pattern first ("H100 PCIe" before "H100"). A device the table lacks has no peak (MFU null) unless
the spec states one (``resources.peak_flops``), and a CPU never has one unless stated: a CPU's
attainable peak depends on its vector units, clock and thread count, which no table here knows.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["CPU_WATTS_PER_THREAD", "DEVICES", "DeviceInfo", "device_info", "lookup"]

# (pattern in the CUDA device name, dense bf16 peak FLOP/s, board power W), most specific first.
# Sources: NVIDIA's datasheets (H100/H200/GH200: 989 TF SXM, 756 TF PCIe, 835 TF NVL; A100 312 TF;
# L40S 362 TF; L40 181 TF; L4 121 TF; A10 125 TF; B200 2.25 PF; RTX 4090 165 TF with fp32
# accumulate; V100 125 TF and T4 65 TF fp16), AMD's (MI300X 1307 TF, MI250X 383 TF).
DEVICES: tuple[tuple[str, float, float], ...] = (
    ("H100 PCIe", 756e12, 350.0),
    ("H100 NVL", 835e12, 400.0),
    ("GH200", 989e12, 1000.0),
    ("H200", 989e12, 700.0),
    ("H100", 989e12, 700.0),
    ("H800", 989e12, 700.0),
    ("B200", 2250e12, 1000.0),
    ("A100-PCIE", 312e12, 300.0),
    ("A100 80GB PCIe", 312e12, 300.0),
    ("A100", 312e12, 400.0),
    ("A800", 312e12, 400.0),
    ("L40S", 362e12, 350.0),
    ("L40", 181e12, 300.0),
    ("L4", 121e12, 72.0),
    ("A10G", 70e12, 300.0),
    ("A10", 125e12, 150.0),
    ("RTX 4090", 165e12, 450.0),
    ("V100", 125e12, 300.0),
    ("T4", 65e12, 70.0),
    ("MI300X", 1307e12, 750.0),
    ("MI250X", 383e12, 560.0),
)

# Rated power of one hardware thread of a server CPU, for an *estimate* where RAPL cannot be read:
# a package's TDP over its threads is 2-8 W (EPYC 7763: 280 W / 128; Xeon Platinum 8380:
# 270 W / 80; a 125 W desktop part over 16). State your own with resources.watts.
CPU_WATTS_PER_THREAD = 4.0


@dataclass(frozen=True)
class DeviceInfo:
    """One device a trial holds: its name ("cpu" or the GPU's), kind, peak FLOP/s and rated watts
    (None: unknown), and where each came from ("table", "resources.peak_flops", "default", ...)."""

    name: str
    kind: str  # "cpu" or "cuda"
    peak_flops: float | None
    watts: float | None
    peak_source: str = ""
    watts_source: str = ""


def lookup(name: str) -> tuple[float, float] | None:
    """(peak bf16 FLOP/s, rated W) of the GPU called ``name`` (any case), or None if unknown."""
    key = name.upper()
    for pattern, peak, watts in DEVICES:
        if pattern.upper() in key:
            return peak, watts
    return None


def device_info(kind: str, name: str = "", peak_flops: float | None = None, watts: float | None = None) -> DeviceInfo:
    """The device of kind ``kind`` ("cpu" or "cuda") called ``name``, with the spec's overrides
    (``resources.peak_flops``, ``resources.watts``: per GPU, or per CPU thread) taking precedence."""
    if kind != "cuda":
        return DeviceInfo("cpu", "cpu", peak_flops, watts if watts is not None else CPU_WATTS_PER_THREAD,
                          "resources.peak_flops" if peak_flops is not None else "",
                          "resources.watts" if watts is not None else "default")
    known = lookup(name)
    peak = peak_flops if peak_flops is not None else (known[0] if known else None)
    rated = watts if watts is not None else (known[1] if known else None)
    return DeviceInfo(name or "cuda", "cuda", peak, rated,
                      "resources.peak_flops" if peak_flops is not None else ("table" if known else ""),
                      "resources.watts" if watts is not None else ("table" if known else ""))
