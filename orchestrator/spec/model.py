"""The spec's ``model:`` section: the built-in GPT's settings, or a lab's sizes (a ladder or a
hook), and the checks that tie them to the trainer (:func:`check_model`).

How a target N becomes a model is orchestrator.planning.trials.sizes; this module only validates what
the spec says. Shared by the other sections: the strict base model and the name rule.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator

from workers.config import IMPORT_PATH, PositiveFloat, json_only

__all__ = ["GPT_MODEL_FIELDS", "MOE_FIELDS", "ModelSpec", "Name", "Rung", "check_model"]

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


def _safe_name(v: str) -> str:
    # A name may become a directory: no separators, no "..", nothing hidden.
    if not NAME_RE.match(v):
        raise ValueError("expected 1-100 letters, digits, '.', '_' or '-', starting with a letter or digit")
    return v


Name = Annotated[str, AfterValidator(_safe_name)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)  # no .inf or .nan in a spec


# The settings that only a mixture of experts reads (ffn: moe).
MOE_FIELDS = ("experts", "top_k", "aux_loss")


class Rung(_Strict):
    """One size of a lab's ladder (``model.ladder``): its name, exact N and the settings its
    trainer builds it from (trial.model)."""

    name: Name
    n_params: Annotated[int, Field(ge=1, le=int(1e18))]
    n_params_nonembed: Annotated[int, Field(ge=1, le=int(1e18))] | None = None  # for rules with n: nonembed
    settings: Annotated[dict[str, Any], AfterValidator(json_only)] = {}

    @field_validator("n_params", "n_params_nonembed", mode="before")
    @classmethod
    def _whole(cls, v):
        # YAML writes 1.2e7 as a string or a float: a parameter count is a whole number.
        try:
            f = float(v) if isinstance(v, (str, float)) else v
        except ValueError:
            return v
        return int(f) if isinstance(f, float) and f.is_integer() else f



# The model settings of the built-in GPT: refused with a lab's trainer, whose sizes come from
# ``ladder`` or ``size`` (the two ways orchestrator.planning.trials.sizes maps a target N to a model).
GPT_MODEL_FIELDS = ("family", "seq_len", "head_dim", "aspect_ratio", "max_layers", "parametrization", "base_width",
                    "ffn", "experts", "top_k", "aux_loss")


class ModelSpec(_Strict):
    # A lab's trainer (trainer: {function | command}): its sizes, as a fixed ladder of named
    # settings with exact N (targets snap to the nearest rung), or a hook "module:function"
    # called as size(target_n) -> (settings, exact_n).
    ladder: list[Rung] | None = Field(None, min_length=1)
    size: str | None = None
    # gpt: GPT-2 style (workers/gpt/model.py); llama: RMSNorm, SwiGLU, rotary positions and an
    # untied head (workers/gpt/llama.py). A GPT's trial ids do not hash the family.
    family: Literal["gpt", "llama"] = "gpt"
    seq_len: int = Field(128, ge=8, le=65536)
    head_dim: int = Field(8, ge=1, le=512)
    aspect_ratio: PositiveFloat = 32.0
    max_layers: int = Field(64, ge=1, le=512)
    # μP (Yang et al. 2022, "Tensor Programs V"): learning rates and initialisation scale with
    # base_width / d_model, so a learning rate tuned at base_width transfers to wider models
    # (workers/gpt/model.py has the rules).
    parametrization: Literal["standard", "mup"] = "standard"
    base_width: int | None = Field(None, ge=1, le=1 << 20)
    # Mixture of experts (workers/gpt/model.py, MoE): each block's MLP becomes ``experts`` MLPs,
    # ``top_k`` of them per token, so parameters grow with experts while the compute per token
    # stays that of the active parameters, the N every budget counts (workers/gpt/arch.py).
    # A load-balancing loss times ``aux_loss`` keeps the router from sending every token to a
    # few experts (Switch Transformer, Fedus et al. 2021, eq. 4, coefficient 0.01; GShard,
    # Lepikhin et al. 2020, top-2 routing). Dense models keep their trial ids.
    ffn: Literal["dense", "moe"] = "dense"
    experts: int = Field(8, ge=1, le=256)
    top_k: int = Field(2, ge=1)
    aux_loss: float = Field(0.01, ge=0, allow_inf_nan=False)




def check_model(m: ModelSpec, trainer: str) -> None:
    """Raise ValueError (one line naming the field) when ``m`` does not fit ``trainer`` (gpt,
    simulated, function or command) or contradicts itself."""
    if trainer in ("function", "command"):
        _check_sizes(m)
    else:
        for k in ("ladder", "size"):
            if getattr(m, k) is not None:
                raise ValueError(f"model.{k}: only for a lab's trainer (trainer: {{function: ...}} or "
                                 f"{{command: ...}}); the built-in {trainer} sizes its own models")
    if m.parametrization == "mup" and m.base_width is None:
        raise ValueError("model.parametrization: mup needs model.base_width (the width whose learning rate "
                         "is transferred, e.g. base_width: 64)")
    if m.parametrization == "standard" and m.base_width is not None:
        raise ValueError("model.base_width: only for parametrization: mup (set parametrization: mup, or remove it)")
    if m.ffn == "dense":
        # Written and not its default: a default written out changes nothing (and is what a
        # variant's sections, merged into the baseline's full settings, hold).
        for name in MOE_FIELDS:
            if _written(m, name):
                raise ValueError(f"model.{name}: only for ffn: moe (set ffn: moe, or remove {name})")
    elif m.top_k > m.experts:
        raise ValueError(f"model.top_k={m.top_k} > model.experts={m.experts} (expected top_k <= experts)")
    if m.family == "llama":
        if m.ffn == "moe":
            raise ValueError("model.ffn: moe is only for family: gpt (set ffn: dense, or family: gpt)")
        if m.parametrization == "mup":
            raise ValueError("model.parametrization: mup is only for family: gpt "
                             "(set parametrization: standard, or family: gpt)")
        if m.head_dim % 2:
            raise ValueError(f"model.head_dim={m.head_dim}: family: llama needs an even head_dim "
                             "(rotary embeddings rotate pairs of coordinates)")


def _written(m: ModelSpec, name: str) -> bool:
    return name in m.model_fields_set and getattr(m, name) != ModelSpec.model_fields[name].default


def _check_sizes(m: ModelSpec) -> None:
    """A lab's trainer: sizes from exactly one of a ladder (distinct names and N) or a hook, and
    none of the built-in GPT's settings."""
    written = [k for k in GPT_MODEL_FIELDS if _written(m, k)]
    if written:
        raise ValueError(f"model.{written[0]}: a setting of the built-in GPT (a lab's trainer gets its sizes "
                         "from model.ladder or model.size)")
    if (m.ladder is None) == (m.size is None):
        raise ValueError("model: a lab's trainer needs exactly one of ladder (a list of sizes with name, "
                         "n_params, settings) or size (a hook module:function)")
    if m.size is not None and not IMPORT_PATH.match(m.size):
        raise ValueError(f"model.size: {m.size!r} is not an import path (expected package.module:function)")
    for what in ("name", "n_params") if m.ladder is not None else ():
        seen: dict = {}
        for i, r in enumerate(m.ladder):
            if getattr(r, what) in seen:
                raise ValueError(f"model.ladder[{i}].{what}: {getattr(r, what)!r} is also "
                                 f"model.ladder[{seen[getattr(r, what)]}]'s (expected each rung to differ)")
            seen[getattr(r, what)] = i
