"""The trainer contract suite (scalesweep.testing) run against every trainer this project ships:
the built-in GPT (both families) and simulator, and the two examples a lab copies."""

from pathlib import Path

import pytest

from bench.worlds import VISIBLE_LAWS, law_spec
from conftest import tiny_spec_dict
from scalesweep.testing import TrainerContract

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
TINY = tiny_spec_dict("unused")


class _Cached(TrainerContract):
    @pytest.fixture(autouse=True)
    def _session_cache(self, cache_dir):
        self.cache_dir = cache_dir  # the built-in corpus, materialised once per session


class TestBuiltinGPT(_Cached):
    trainer = "gpt"
    spec = {"model": TINY["model"], "data": TINY["data"], "train": {"n_evals": 2, "log_every": 5}}
    n_params, tokens, batch_tokens, lr = 0, 256 * 40, 256, 6e-3
    diverging_train = {"lr": 1e6}


class TestBuiltinLlama(TestBuiltinGPT):
    spec = {**TestBuiltinGPT.spec, "model": {**TINY["model"], "family": "llama"}}


class TestSimulator(_Cached):
    trainer = "simulated"
    spec = {"world": {"law": law_spec(VISIBLE_LAWS["T0"]),
                      "hparams": {"lr": {"coef": 1e-2, "n": "total"}, "batch": {"coef": 256, "n": "total"}}}}
    n_params, tokens, batch_tokens, lr = 10_000_000, 200_000_000, 256, 1e-2
    diverging_train = {"lr": 1.0}  # 100x the world's optimum
    reports_rows = checkpoints = False  # a draw from the world: no progress, nothing to resume
    failing_spec = {"train": {"schedule": "wsd"}}  # a branch asks its context for its stem


class TestExamplePythonTrainer(TrainerContract):
    trainer = {"function": "mylab.scaling:train"}
    workdir = str(EXAMPLES / "python_trainer")
    model = {"width": 32, "depth": 2, "embed": 16}
    n_params, tokens, batch_tokens, lr = 21824, 256 * 24, 256, 3e-3


class TestExampleCommandTrainer(TrainerContract):
    trainer = {"command": "python train.py --trial {trial_json}"}
    workdir = str(EXAMPLES / "command_trainer")
    model = {"channels": 16, "layers": 2}
    n_params, tokens, batch_tokens, lr = 10528, 256 * 60, 256, 3e-3
    failing_model = {"channels": 0, "layers": 2}
