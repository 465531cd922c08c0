"""scalesweep's worker side: the GPT, its data, its training loop and the result store.

Workers never import the orchestrator; the result store is their only channel back.
"""

from workers.arch import GPTShape, ShapeRule, param_count, shape_for_params
from workers.flops import model_flops_per_token, tokens_for_budget, train_flops
from workers.store import ResultStore, TrialStatus
from workers.train import TrainConfig, TrialConfig, TrialResult, run_trial

__all__ = ["GPTShape", "ResultStore", "ShapeRule", "TrainConfig", "TrialConfig", "TrialResult", "TrialStatus",
           "model_flops_per_token", "param_count", "run_trial", "shape_for_params", "tokens_for_budget", "train_flops"]
