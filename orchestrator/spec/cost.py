"""The spec's ``cost:`` section: what turns device-hours and energy into emissions and money.

Every setting has a default, and a default is labelled as one wherever a figure is shown
(:func:`provenance`): the carbon intensity of the grid, the data centre's power usage
effectiveness, the price of a GPU-hour and of a CPU core-hour, and the MFU assumed for a target
device no trial ran on. ``scalesweep cost`` overrides any of them on its command line; a sweep
records its spec's in plan.json, so ``status``, ``fit``, ``report`` and ``cost`` on its results
use them without the spec.
"""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import Field

from orchestrator.spec.model import _Strict

__all__ = ["CostSpec", "DEFAULT_SOURCES", "Setting", "provenance"]

# Why each default is what it is; shown beside the figure it produced.
DEFAULT_SOURCES = {
    "carbon_g_per_kwh": "default: world grid average 2023, Ember",  # Ember, Global Electricity Review 2024
    "pue": "default: devices only, no facility overhead",
    "price_per_gpu_hour": "default: a rough cloud rate",
    "price_per_cpu_hour": "default: a rough cloud rate",
    "currency": "default",
    "assumed_mfu": "default: a well-tuned dense transformer without torch.compile",
}


class CostSpec(_Strict):
    # grams of CO2-equivalent per kWh drawn (the local grid's, or a supplier's stated figure)
    carbon_g_per_kwh: float = Field(480.0, ge=0, allow_inf_nan=False)
    # power usage effectiveness: facility energy over IT energy (>= 1)
    pue: float = Field(1.0, ge=1, le=10, allow_inf_nan=False)
    price_per_gpu_hour: float = Field(2.0, ge=0, allow_inf_nan=False)
    price_per_cpu_hour: float = Field(0.04, ge=0, allow_inf_nan=False)  # per CPU thread held for an hour
    currency: str = Field("USD", min_length=1, max_length=8, pattern=r"^[A-Za-z$€£¥]+$")
    # Model FLOPs utilisation assumed when the projection names a GPU the trials did not run on
    # (the peak table's bf16 rate x this); a measurement replaces it once trials run there.
    assumed_mfu: float = Field(0.35, gt=0, le=1, allow_inf_nan=False)


@dataclass(frozen=True)
class Setting:
    value: float | str
    source: str  # "spec", a command-line option, or "default: why"

    def to_json(self) -> dict:
        return {"value": self.value, "source": self.source}


def provenance(recorded: dict | None, overrides: dict[str, tuple[object, str]] | None = None) -> dict[str, Setting]:
    """Each cost setting with where it came from. ``recorded`` is plan.json's ``cost`` record
    (``{"settings": {...}, "set": [names the spec wrote]}``; None: defaults); ``overrides`` maps a
    name to (value, the option that gave it)."""
    recorded = recorded if isinstance(recorded, dict) else {}
    written = set(recorded.get("set") or [])
    settings = CostSpec.model_validate({k: v for k, v in (recorded.get("settings") or {}).items()
                                        if k in CostSpec.model_fields and k in written})
    out = {}
    for name in CostSpec.model_fields:
        out[name] = Setting(getattr(settings, name), "spec" if name in written else DEFAULT_SOURCES[name])
    for name, (value, option) in (overrides or {}).items():
        if value is not None:
            out[name] = Setting(value, option)
    return out
