"""Starting or joining Ray, with the authentication mode always set explicitly.

Ray 2.60 reads its auth mode from the RAY_AUTH_MODE environment variable only, once, when
``ray`` is imported; there is no ``ray.init`` argument for it. scalesweep never leaves it to
chance: the CLI reads the user's environment and passes the mode it resolved (the user's
RAY_AUTH_MODE, else ``token``), and :func:`connect`, which imports Ray, writes that mode and
Ray's loopback switch (RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER) into this process's environment
just before: configuration Ray takes only that way, not settings read from the user. In token mode a local
cluster generates a token at ``~/.ray/auth_token`` on first use (``ray get-auth-token``
prints it, for the dashboard); on a remote cluster the token comes from RAY_AUTH_TOKEN or that
file. The embedded cluster's dashboard binds to 127.0.0.1 only.
"""

from __future__ import annotations

import enum
import logging
import os
import sys

__all__ = ["connect", "AuthMode", "AUTH_MODES", "unshared_results", "check_results_reach_every_node"]

log = logging.getLogger(__name__)


class AuthMode(str, enum.Enum):
    """Ray's RAY_AUTH_MODE values that scalesweep supports."""

    TOKEN = "token"
    DISABLED = "disabled"


AUTH_MODES = tuple(m.value for m in AuthMode)


def connect(address: str | None, auth_mode: str, num_cpus: int | None = None, dashboard: bool = True) -> str:
    """Join the cluster at ``address`` or start a local one; returns a description.

    If Ray is already initialised in this process (tests, notebooks, a Ray job's driver
    re-entering), that connection is used as is.
    """
    if auth_mode not in AUTH_MODES:
        raise ValueError(f"auth mode {auth_mode!r} (expected one of {', '.join(AUTH_MODES)})")
    auth_mode = AuthMode(auth_mode).value
    # Before importing ray: its native layer reads the mode once, at import.
    if "ray" in sys.modules and os.environ.get("RAY_AUTH_MODE", AuthMode.DISABLED.value) != auth_mode:
        log.warning("ray was imported before RAY_AUTH_MODE=%s was set; Ray may not use it "
                    "(export RAY_AUTH_MODE before starting Python)", auth_mode)
    os.environ["RAY_AUTH_MODE"] = auth_mode
    if not address:
        # An embedded cluster is single-node: make Ray take the loopback address as the node IP,
        # as it does on macOS and Windows, so its servers listen on 127.0.0.1 only (Ray binds its
        # gRPC servers to the node IP; ray-project/ray#59852). Read by ray at import.
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    import ray

    if ray.is_initialized():
        return "existing Ray connection"
    common = dict(log_to_driver=False, logging_level=logging.WARNING, configure_logging=False)
    if address:
        ray.init(address=address, **common)
        return f"Ray cluster at {address} (auth: {auth_mode})"
    ctx = ray.init(num_cpus=num_cpus, include_dashboard=dashboard, dashboard_host="127.0.0.1", **common)
    url = getattr(ctx, "dashboard_url", "") or ""
    where = f"; dashboard http://{url}" if url and dashboard else ""
    return f"local Ray with {int(ray.cluster_resources().get('CPU', 0))} CPUs (auth: {auth_mode}{where})"


OBJECT_STORAGE_HINT = ("expected object storage every node reaches, such as s3://bucket/sweeps, or a directory "
                       "mounted at the same path on every node, declared with results_shared: true in the spec "
                       "or --results-shared")


def unshared_results(results: str, shared: bool) -> str:
    """Why trials on other nodes (or a submitted job's driver) would not write where the user
    reads ``results``; empty when they would."""
    scheme = results.split("://", 1)[0].lower() if "://" in results else ""
    if scheme == "memory":
        return f"results: {results!r} lives in one process's memory ({OBJECT_STORAGE_HINT})"
    if scheme not in ("", "file") or shared:
        return ""
    return (f"results: {results!r} is a directory on one machine's disk, and trials on other nodes would "
            f"write to their own ({OBJECT_STORAGE_HINT})")


def check_results_reach_every_node(results: str, shared: bool, address: str) -> None:
    """For a driver that joined the cluster at ``address`` (Ray connected): UserError unless
    every node writes where the driver reads. Through Ray Client (ray://) the driver is on
    another machine than every node; on a single node, a warning, as an autoscaler may add more."""
    import ray

    from orchestrator.errors import UserError

    problem = unshared_results(results, shared)
    if not problem:
        return
    if address.startswith("ray://"):
        raise UserError(f"{problem}; through Ray Client ({address}) no node shares this machine's disk")
    nodes = sum(1 for n in ray.nodes() if n.get("Alive"))
    if nodes > 1:
        raise UserError(f"{problem}; this cluster has {nodes} nodes")
    log.warning("%s; fine while this cluster has one node", problem)
