"""scalesweep's worker side: the GPT, its data, its training loop, simulated worlds and the
result store.

Workers never import the orchestrator; the result store is their only channel back. Names
are imported lazily (PEP 562), so ``import workers.store`` or ``workers.world`` does not pull
in torch (a second of import time, and thread pools that slow small BLAS calls in the driver).
"""

from workers.lazy import lazy_getattr

_EXPORTS = {
    "GPTShape": "workers.arch", "ShapeRule": "workers.arch", "param_count": "workers.arch",
    "shape_for_params": "workers.arch",
    "model_flops_per_token": "workers.flops", "tokens_for_budget": "workers.flops", "train_flops": "workers.flops",
    "ResultStore": "workers.store", "TrialStatus": "workers.store",
    "TrainConfig": "workers.trial", "TrialConfig": "workers.trial", "TrialResult": "workers.trial",
    "run_trial": "workers.trial",
    "World": "workers.world", "WorldConfig": "workers.world", "NoiseConfig": "workers.world",
    "compile_expression": "workers.expr",
}

__all__ = sorted(_EXPORTS)

__getattr__ = lazy_getattr('workers', _EXPORTS)
