"""Shared fixtures: one real local Ray for the whole session, tiny specs, a byte corpus cache."""

from __future__ import annotations

import os
from pathlib import Path

# Ray reads these once, when it is first imported, and some test modules import ray (e.g. its
# cluster-launcher schema) before the session's cluster starts: set them before anything.
os.environ["RAY_AUTH_MODE"] = "token"
os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"  # embedded cluster on loopback (orchestrator.running.cluster)

import pytest  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = ROOT.parent / "shared" / "data"


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory) -> str:
    """Materialised byte corpora live here for the session (not in the user's ~/.cache)."""
    return str(tmp_path_factory.mktemp("corpus-cache"))


@pytest.fixture(scope="session")
def ray_cluster():
    """A real local Ray, started once (ray.init costs 5-20 s) and shut down by ray.shutdown(),
    never `ray stop`, which would kill every Ray process on the machine."""
    from orchestrator.running.cluster import connect

    desc = connect(None, "token", num_cpus=2, dashboard=True)
    import ray

    yield desc
    ray.shutdown()


def autograd_saved_bytes(model, idx) -> list[int]:
    """The bytes of every tensor autograd keeps for the backward pass of ``model(idx, idx)``,
    once per storage, the parameters left out: what the activation estimates count
    (orchestrator.planning.estimate.trial_memory)."""
    import torch

    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    saved: dict[int, int] = {}

    def pack(t):
        if t.untyped_storage().data_ptr() not in params:
            saved[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(idx, idx)
    return list(saved.values())


@pytest.fixture
def bucket():
    """A directory on fsspec's in-memory filesystem (memory://), standing in for object storage."""
    import uuid

    import fsspec

    name = f"memory://bucket-{uuid.uuid4().hex[:8]}/sweeps"
    yield name
    fsspec.filesystem("memory").rm(name.split("://")[1], recursive=True)


def tiny_spec_dict(results: str, name: str = "tiny", **overrides) -> dict:
    """A sweep that trains in seconds: 32-token contexts, 256-token batches, ~1e9-FLOP trials."""
    spec = {
        "name": name,
        "model": {"seq_len": 32, "head_dim": 8, "aspect_ratio": 16},
        "data": {"builtin": "python-stdlib", "eval_tokens": 2048, "block_tokens": 1024},
        "sweep": {"kind": "isoflop", "budgets": [5e8, 1.5e9], "model_sizes": [2e3, 4e3, 8e3]},
        "train": {"batch_tokens": 256, "lr": 6e-3, "n_evals": 2, "log_every": 5},
        "resources": {"cpus": 1, "gpus": 0, "max_retries": 1},
        "results": results,
        "fit": {"target_compute": 1e12},
    }
    for key, value in overrides.items():
        if key != "sweep" and isinstance(value, dict) and isinstance(spec.get(key), dict):
            spec[key] = {**spec[key], **value}
        else:
            spec[key] = value
    return spec


@pytest.fixture
def tiny_spec(tmp_path):
    from orchestrator.spec import parse_spec

    def make(**overrides):
        return parse_spec(tiny_spec_dict(str(tmp_path / "results"), **overrides))

    return make


def pytest_collection_modifyitems(config, items):
    # Ray-backed tests share one cluster; run them last so unit failures surface first.
    items.sort(key=lambda it: it.get_closest_marker("ray") is not None)


os.environ.setdefault("MPLBACKEND", "Agg")
