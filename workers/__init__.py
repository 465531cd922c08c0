"""scalesweep's worker side: the GPT, its data, its training loop, simulated worlds and the
result store.

Workers never import the orchestrator; the result store is their only channel back. Names
are imported lazily (PEP 562), so ``import workers.store`` or ``workers.simulated.world`` does not pull
in torch (a second of import time, and thread pools that slow small BLAS calls in the driver).
"""

from importlib import import_module


def lazy_getattr(package: str, exports: dict[str, str]):
    """A module ``__getattr__`` that resolves ``exports`` (name -> module path) on first use (PEP 562);
    the orchestrator's and scalesweep's package ``__init__`` use it too."""

    def __getattr__(name: str):
        if name in exports:
            return getattr(import_module(exports[name]), name)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    return __getattr__


_EXPORTS = {
    "GPTShape": "workers.gpt.arch", "ShapeRule": "workers.gpt.arch", "param_count": "workers.gpt.arch",
    "shape_for_params": "workers.gpt.arch",
    "model_flops_per_token": "workers.flops", "tokens_for_budget": "workers.flops", "train_flops": "workers.flops",
    "ResultStore": "workers.store", "TrialStatus": "workers.store",
    "TrainConfig": "workers.config", "DataConfig": "workers.config", "TrialConfig": "workers.config",
    "TrialResult": "workers.config", "WorldConfig": "workers.config", "NoiseConfig": "workers.config",
    "LawConfig": "workers.config",
    "run_trial": "workers.run",
    "World": "workers.simulated.world",
    "compile_expression": "workers.simulated.expr",
}

__all__ = sorted(_EXPORTS)

__getattr__ = lazy_getattr('workers', _EXPORTS)
