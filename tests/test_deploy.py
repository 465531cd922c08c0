"""deploy/ is checked here without a cloud account, a Kubernetes cluster or a network.

- ``deploy/cluster-aws.yaml`` against the cluster launcher's own JSON schema, the
  ``ray/autoscaler/ray-schema.json`` of the installed ray, and through Ray's ``prepare_config``
  and ``validate_config`` (what ``ray up`` runs before it calls the cloud); then what the
  schema cannot say: the GPU type scales from zero, token auth, a private dashboard.
- ``deploy/kuberay/*.yaml``: see test_deploy_kuberay.py.
- ``deploy/Dockerfile`` against ``pyproject.toml``: base tag, torch pin, what is copied.

Each checker returns a list of problems. Tests assert that the shipped files have none and,
for every check, that a broken copy is caught, so no check passes vacuously.
"""

from __future__ import annotations

import copy
import json
import os
import re
import shlex
import tomllib
from pathlib import Path

import jsonschema
import numpy as np
import pytest
import yaml
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name

from conftest import ROOT

DEPLOY = ROOT / "deploy"
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
DEPS = {canonicalize_name(Requirement(d).name): Requirement(d) for d in PYPROJECT["project"]["dependencies"]}
VERSION = PYPROJECT["project"]["version"]
RESULT_SCHEMES = ("s3://", "gs://")


def load(path: Path):
    return yaml.safe_load(path.read_text())


# ---------------------------------------------------------------------------------------
# deploy/Dockerfile against pyproject.toml


def dockerfile_instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with line continuations joined and comments dropped."""
    lines = [ln for ln in text.splitlines() if not ln.lstrip().startswith("#")]
    joined = re.sub(r"\\\n", " ", "\n".join(lines))
    out = []
    for ln in joined.splitlines():
        if ln.strip():
            word, _, rest = ln.strip().partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def dockerfile_facts(text: str) -> dict:
    """Base image, WORKDIR, COPY sources and pip installs, with ARG defaults substituted."""
    args, facts = {}, {"from": None, "workdir": None, "copied": [], "pip": []}

    def subst(s: str) -> str:
        return re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: args.get(m[1] or m[2], m[0]), s)

    for word, rest in dockerfile_instructions(text):
        if word == "ARG" and "=" in rest:
            name, _, default = rest.partition("=")
            args[name] = default.strip('"')
        elif word == "FROM":
            facts["from"] = subst(rest.split()[0])
        elif word == "WORKDIR":
            facts["workdir"] = subst(rest)
        elif word == "COPY":
            parts = [p for p in shlex.split(rest) if not p.startswith("--")]
            facts["copied"] += [p.rstrip("/") for p in parts[:-1]]
        elif word == "RUN":
            lex = shlex.shlex(subst(rest), posix=True, punctuation_chars=";&|")
            lex.whitespace_split = True
            commands, words = [], []
            for w in lex:  # split on the shell's command separators, not inside quotes
                if w in ("&&", "||", ";"):
                    commands.append(words)
                    words = []
                else:
                    words.append(w)
            for words in commands + [words]:
                if words[:2] == ["pip", "install"] or words[:4] == ["python", "-m", "pip", "install"]:
                    facts["pip"].append(words[words.index("install") + 1:])
    return facts


OPTIONS_WITH_VALUE = {"--index-url", "-i", "--extra-index-url", "-r", "--requirement", "-c", "--constraint", "-f", "--find-links"}


def pip_targets(argv: list[str]) -> tuple[list[str], dict[str, str]]:
    """(requirements and paths, options with values) of one `pip install` argument list."""
    targets, options, it = [], {}, iter(argv)
    for a in it:
        if a in OPTIONS_WITH_VALUE:
            options[a] = next(it, "")
        elif "=" in a and a.split("=", 1)[0] in OPTIONS_WITH_VALUE:
            options[a.split("=", 1)[0]] = a.split("=", 1)[1]
        elif not a.startswith("-"):
            targets.append(a)
    return targets, options


def dockerfile_problems(text: str) -> list[str]:
    facts, problems = dockerfile_facts(text), []
    # Base: rayproject/ray:{ray}-py{XY}-{gpu|cuNNN}, ray within the pin, Python within requires-python.
    m = re.fullmatch(r"rayproject/ray:(\d+\.\d+\.\d+)-py(\d)(\d+)-(gpu|cu\d+)", facts["from"] or "")
    if not m:
        return [f"FROM {facts['from']!r}: expected rayproject/ray:<ray>-py<XY>-gpu (or -cuNNN)"]
    ray_version, python = m[1], f"{m[2]}.{m[3]}"
    if not DEPS["ray"].specifier.contains(ray_version):
        problems.append(f"FROM: ray {ray_version} is outside pyproject's ray pin {DEPS['ray'].specifier}")
    if not SpecifierSet(PYPROJECT["project"]["requires-python"]).contains(python):
        problems.append(f"FROM: Python {python} is outside requires-python {PYPROJECT['project']['requires-python']}")
    # Explicit installs must be pyproject dependencies, pinned the same way; torch must be the
    # exact pyproject pin, from a CUDA index of PyTorch's.
    torch_seen = installs_project = False
    for argv in facts["pip"]:
        targets, options = pip_targets(argv)
        for t in targets:
            if t == ".":
                installs_project = True
                if "--no-cache-dir" not in argv:
                    problems.append("pip install . without --no-cache-dir")
                continue
            req = Requirement(t)
            name = canonicalize_name(req.name)
            if name not in DEPS:
                problems.append(f"pip install {t}: {req.name} is not a dependency in pyproject.toml")
                continue
            pins = [s.version for s in req.specifier if s.operator == "=="]
            for v in pins:
                if not DEPS[name].specifier.contains(v):
                    problems.append(f"pip install {t}: {v} is outside pyproject's {DEPS[name]}")
            if name == "torch":
                torch_seen = True
                if str(req.specifier) != str(DEPS["torch"].specifier):
                    problems.append(f"pip install {t}: expected exactly pyproject's pin {DEPS['torch']}")
                index = options.get("--index-url") or options.get("-i", "")
                if not re.fullmatch(r"https://download\.pytorch\.org/whl/cu\d+/?", index):
                    problems.append(f"pip install {t}: expected --index-url https://download.pytorch.org/whl/cuNNN "
                                    f"(the CUDA build), got {index or 'PyPI'}")
    if not torch_seen:
        problems.append(f"torch is not installed explicitly (expected pip install {DEPS['torch']} from a CUDA index)")
    if not installs_project:
        problems.append("the project itself is never installed (expected pip install --no-cache-dir .)")
    # Everything `pip install .` and the deployments need must be in the image.
    packages = [p.rstrip("*") for p in PYPROJECT["tool"]["setuptools"]["packages"]["find"]["include"]]
    needed = ["pyproject.toml", PYPROJECT["project"]["readme"], *packages, "specs"]
    copied = {Path(c).as_posix() for c in facts["copied"]}
    problems += [f"COPY: {n} is never copied into the image" for n in needed if n not in copied]
    if not facts["workdir"]:
        problems.append("no WORKDIR: the manifests need to know where the specs are")
    return problems


def test_dockerfile_matches_pyproject():
    assert dockerfile_problems((DEPLOY / "Dockerfile").read_text()) == []


def test_pyproject_pins_are_usable_in_an_image():
    # torch exactly pinned (the image must get that build and no other); ray pinned to a minor
    # release (the cluster's ray and the image's ray must match).
    assert [s.operator for s in DEPS["torch"].specifier] == ["=="]
    assert DEPS["ray"].specifier.contains("2.60.0") and not DEPS["ray"].specifier.contains("2.61.0")


@pytest.mark.parametrize("old, new, expected", [
    ('"torch==2.13.0"', '"torch==2.12.0"', "expected exactly pyproject's pin"),
    ('"torch==2.13.0"', '"torch>=2.13"', "expected exactly pyproject's pin"),
    ('--index-url "${TORCH_INDEX_URL}" ', "", "the CUDA build"),
    ("rayproject/ray:2.60.0-py311-gpu", "rayproject/ray:2.59.0-py311-gpu", "outside pyproject's ray pin"),
    ("rayproject/ray:2.60.0-py311-gpu", "rayproject/ray:2.60.0-py310-gpu", "outside requires-python"),
    ('RUN pip install --no-cache-dir --index-url "${TORCH_INDEX_URL}" "torch==2.13.0"', "", "torch is not installed explicitly"),
    ("COPY --chown=ray:users workers/ workers/", "", "workers is never copied"),
    ("RUN pip install --no-cache-dir . \\", "RUN pip install --no-cache-dir numpy \\", "never installed"),
])
def test_dockerfile_check_catches(old, new, expected):
    text = (DEPLOY / "Dockerfile").read_text()
    assert old in text
    problems = dockerfile_problems(text.replace(old, new))
    assert any(expected in p for p in problems), problems


def image_workdir() -> str:
    return dockerfile_facts((DEPLOY / "Dockerfile").read_text())["workdir"]


# ---------------------------------------------------------------------------------------
# deploy/cluster-aws.yaml against the cluster launcher's schema


def ray_schema() -> dict:
    import ray.autoscaler

    return json.loads((Path(ray.autoscaler.__file__).parent / "ray-schema.json").read_text())


def launcher_problems(cfg: dict) -> list[str]:
    problems = [f"schema: {'.'.join(map(str, e.absolute_path)) or '(top)'}: {e.message}"
                for e in jsonschema.Draft7Validator(ray_schema()).iter_errors(cfg)]
    if problems:
        return problems
    # What `ray up` does before it talks to the cloud: merge defaults.yaml, check the docker
    # section, fill per-type worker bounds, validate the merged config.
    from ray.autoscaler._private.util import prepare_config, validate_config

    try:
        validate_config(prepare_config(copy.deepcopy(cfg)))
    except Exception as e:  # noqa: BLE001 - any rejection by Ray is the finding
        return [f"ray prepare/validate_config: {type(e).__name__}: {e}"]

    types = cfg["available_node_types"]
    head = types[cfg["head_node_type"]]
    if head.get("resources", {}).get("GPU"):
        problems.append("head node type advertises GPUs (the head runs the driver only)")
    gpu_types = {k: t for k, t in types.items() if t.get("resources", {}).get("GPU", 0) >= 1}
    if not gpu_types:
        problems.append("no node type declares resources.GPU (the autoscaler cannot plan a GPU node it has not seen)")
    for name, t in gpu_types.items():
        if t.get("min_workers", 0) != 0:
            problems.append(f"{name}: min_workers={t.get('min_workers')} (expected 0: scale GPU nodes from zero)")
        if t.get("max_workers", 0) < 1:
            problems.append(f"{name}: max_workers={t.get('max_workers')} (expected at least 1)")

    # Token auth on every node, the token read from a synced file kept outside the repository.
    opts = " ".join(cfg.get("docker", {}).get("run_options", []))
    if "RAY_AUTH_MODE=token" not in opts:
        problems.append("docker.run_options: no -e RAY_AUTH_MODE=token")
    if re.search(r"RAY_AUTH_TOKEN=", opts):
        problems.append("docker.run_options: a literal RAY_AUTH_TOKEN (use RAY_AUTH_TOKEN_PATH and file_mounts)")
    path = re.search(r"RAY_AUTH_TOKEN_PATH=(\S+)", opts)
    mounts = cfg.get("file_mounts", {})
    if not path:
        problems.append("docker.run_options: no -e RAY_AUTH_TOKEN_PATH=...")
    else:
        sources = [src for dst, src in mounts.items() if path[1].startswith(dst.rstrip("/") + "/")]
        if not sources:
            problems.append(f"RAY_AUTH_TOKEN_PATH={path[1]} is under no file_mounts destination")
        for src in sources:
            if not os.path.isabs(os.path.expanduser(src)):
                problems.append(f"file_mounts source {src} is relative to wherever `ray up` runs")
            local = Path(os.path.expanduser(src)).resolve()
            if local == ROOT or ROOT in local.parents:
                problems.append(f"file_mounts source {src} is inside the repository (the token would be committed)")

    # The dashboard and job API stay private: loopback on the head, reached through `ray dashboard`.
    start = " ".join(cfg.get("head_start_ray_commands", []))
    host = re.search(r"--dashboard-host[= ](\S+)", start)
    if not host or host[1] not in ("127.0.0.1", "localhost"):
        problems.append(f"head_start_ray_commands: dashboard host {host[1] if host else '(Ray default)'} "
                        "(expected --dashboard-host=127.0.0.1; reach it with `ray dashboard`)")
    for perm in cfg["provider"].get("security_group", {}).get("IpPermissions", []):
        world = any(r.get("CidrIp") == "0.0.0.0/0" for r in perm.get("IpRanges", []))
        every_port = perm.get("IpProtocol") == "-1"
        for port, what in ((8265, "dashboard and job API"), (10001, "Ray Client"), (6379, "GCS")):
            if world and (every_port or perm.get("FromPort", 0) <= port <= perm.get("ToPort", 65535)):
                problems.append(f"provider.security_group opens port {port} ({what}) to 0.0.0.0/0")
    image = cfg.get("docker", {}).get("image", "")
    if not image.endswith(f"/scalesweep:{VERSION}"):
        problems.append(f"docker.image {image!r}: expected <registry>/scalesweep:{VERSION} (deploy/Dockerfile)")
    return problems


def test_launcher_config_is_valid_for_ray_up():
    assert launcher_problems(load(DEPLOY / "cluster-aws.yaml")) == []


def _gpu(cfg):
    return cfg["available_node_types"]["gpu"]


@pytest.mark.parametrize("mutate, expected", [
    (lambda c: _gpu(c).update(min_worker=0), "'min_worker' was unexpected"),
    (lambda c: c.update(max_worker=4), "'max_worker' was unexpected"),
    (lambda c: _gpu(c)["resources"].update(GPU=0.5), "is not of type 'integer'"),
    (lambda c: _gpu(c).update(min_workers=1), "expected 0: scale GPU nodes from zero"),
    (lambda c: _gpu(c).update(resources={"CPU": 8}), "no node type declares resources.GPU"),
    (lambda c: c["docker"]["run_options"].remove("-e RAY_AUTH_MODE=token"), "no -e RAY_AUTH_MODE=token"),
    (lambda c: c["docker"]["run_options"].append("-e RAY_AUTH_TOKEN=abc"), "a literal RAY_AUTH_TOKEN"),
    (lambda c: c.update(file_mounts={"/home/ray/.scalesweep-secrets": str(ROOT / "deploy")}), "inside the repository"),
    (lambda c: c.update(head_start_ray_commands=[s.replace("127.0.0.1", "0.0.0.0") for s in c["head_start_ray_commands"]]),
     "dashboard host 0.0.0.0"),
    (lambda c: c["provider"].update(security_group={"IpPermissions": [
        {"FromPort": 8265, "ToPort": 8265, "IpProtocol": "tcp", "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}]}),
     "opens port 8265"),
    (lambda c: c["provider"].update(security_group={"IpPermissions": [
        {"FromPort": -1, "ToPort": -1, "IpProtocol": "-1", "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}]}),
     "opens port 10001"),
])
def test_launcher_check_catches(mutate, expected):
    cfg = load(DEPLOY / "cluster-aws.yaml")
    mutate(cfg)
    problems = launcher_problems(cfg)
    assert any(expected in p for p in problems), problems


# ---------------------------------------------------------------------------------------
# specs/gpu_sweep.yaml: the sweep the recipes run


def test_gpu_spec_plans_on_a_token_file(tmp_path):
    """The spec loads, and plans into trials (which needs the corpus: two blocks of fake ids)."""
    from orchestrator.planning.trials import TrialFactory, plan_trials
    from orchestrator.spec import load_spec, parse_spec

    spec = load_spec(ROOT / "specs" / "gpu_sweep.yaml")
    assert spec.resources.gpus == 0.25 and spec.resources.cpus == 2
    assert spec.results.startswith(RESULT_SCHEMES)
    fake = tmp_path / "train.bin"
    (np.arange(2 * spec.data.block_tokens) % spec.data.vocab_size).astype(np.uint16).tofile(fake)
    data = yaml.safe_load((ROOT / "specs" / "gpu_sweep.yaml").read_text())
    data["data"]["tokens"] = str(fake)
    local = parse_spec(data)
    trials = plan_trials(local, TrialFactory(local, str(tmp_path)))
    assert len(trials) == sum(len(local.sweep.sizes_for(b)) for b in local.sweep.budgets) == 16
    assert all(t.device == "cuda" for t in trials)
    # Every point keeps its budget: C = 6 N D within one batch of rounding.
    for t in trials:
        assert abs(6 * t.shape.n_params * t.tokens - t.budget) <= 6 * t.shape.n_params * local.train.batch_tokens
    # The memory arithmetic of the spec's comment: fp32 logits, four such tensors at the peak
    # of the loss's backward, must fit a quarter of a 48 GB GPU with room for the model.
    logits_peak = 4 * local.train.batch_tokens * local.data.vocab_size * 4
    assert logits_peak <= 0.7 * local.resources.gpus * 48e9


def test_a_submitted_job_ships_the_project_root():
    """The job's working_dir is the directory holding pyproject.toml and both packages, wherever
    orchestrator.running.jobs sits in the tree."""
    from orchestrator.running.jobs import PROJECT_ROOT

    assert PROJECT_ROOT == ROOT
    assert all((PROJECT_ROOT / p).exists() for p in ("pyproject.toml", "orchestrator", "workers", "specs"))
