"""deploy/ is checked here without a cloud account, a Kubernetes cluster or a network.

- ``deploy/cluster-aws.yaml`` against the cluster launcher's own JSON schema, the
  ``ray/autoscaler/ray-schema.json`` of the installed ray, and through Ray's ``prepare_config``
  and ``validate_config`` (what ``ray up`` runs before it calls the cloud); then what the
  schema cannot say: the GPU type scales from zero, token auth, a private dashboard.
- ``deploy/kuberay/*.yaml`` against the ray.io/v1 CRD fields they use. There is no CRD or API
  server here, so the subset is written out below from KubeRay's generated API reference,
  with ``additionalProperties: false`` on every object it covers so a misspelt field fails;
  then the deployment properties (GPU group from zero, token from a Secret, no public head
  Service, an entrypoint whose spec exists and loads).
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
# deploy/kuberay/*.yaml against the ray.io/v1 CRD
#
# The subset of the CRD schema these manifests use. Source: KubeRay v1.7.0's generated API
# reference (docs/reference/api.md of ray-project/kuberay at v1.7.0, permalink commit
# 97509c3a7216cf3440af381646560a1885afb53b; also vendored as docs.ray.io's "KubeRay CRD API
# reference"), and the Kubernetes core/v1 API for the pod template fields. KubeRay objects
# list every field of that release; core/v1 objects only the fields used here (closed all the
# same: a field not listed is a misspelling until someone adds it here from the API docs).
# Required lists include fields older CRDs required (rayStartParams, minReplicas,
# maxReplicas) so the manifests also apply on older operators.


def closed(properties: dict, required=()) -> dict:
    return {"type": "object", "properties": properties, "required": list(required), "additionalProperties": False}


def array(items: dict) -> dict:
    return {"type": "array", "items": items}


STR, BOOL, NUM = {"type": "string"}, {"type": "boolean"}, {"type": "number"}
INT, COUNT = {"type": "integer"}, {"type": "integer", "minimum": 0}
STR_MAP = {"type": "object", "additionalProperties": STR}  # map[string]string: numbers rejected
QUANTITY = {"type": ["string", "integer", "number"]}  # resource.Quantity is int-or-string
OBJ = {"type": "object"}  # a field these manifests do not use: type only
MANAGED_BY = {"enum": ["ray.io/kuberay-operator", "kueue.x-k8s.io/multikueue"]}

KEY_REF = closed({"name": STR, "key": STR, "optional": BOOL}, ["key"])
ENV_VAR = closed({"name": STR, "value": STR, "valueFrom": closed({
    "secretKeyRef": KEY_REF, "configMapKeyRef": KEY_REF,
    "fieldRef": closed({"fieldPath": STR, "apiVersion": STR}, ["fieldPath"]), "resourceFieldRef": OBJ})}, ["name"])
ENV_FROM = closed({"prefix": STR, "secretRef": closed({"name": STR, "optional": BOOL}),
                   "configMapRef": closed({"name": STR, "optional": BOOL})})
RESOURCES = closed({"limits": {"type": "object", "additionalProperties": QUANTITY},
                    "requests": {"type": "object", "additionalProperties": QUANTITY}, "claims": array(OBJ)})
VOLUME_MOUNT = closed({"name": STR, "mountPath": STR, "readOnly": BOOL, "subPath": STR, "mountPropagation": STR},
                      ["name", "mountPath"])
CONTAINER = closed({
    "name": STR, "image": STR, "imagePullPolicy": {"enum": ["Always", "IfNotPresent", "Never"]},
    "command": array(STR), "args": array(STR), "workingDir": STR, "env": array(ENV_VAR), "envFrom": array(ENV_FROM),
    "resources": RESOURCES, "volumeMounts": array(VOLUME_MOUNT),
    "ports": array(closed({"containerPort": {"type": "integer", "minimum": 1, "maximum": 65535},
                           "name": {"type": "string", "maxLength": 15}, "protocol": {"enum": ["TCP", "UDP", "SCTP"]},
                           "hostPort": INT, "hostIP": STR}, ["containerPort"])),
    "securityContext": OBJ, "lifecycle": OBJ, "livenessProbe": OBJ, "readinessProbe": OBJ, "startupProbe": OBJ,
}, ["name"])
VOLUME = closed({"name": STR, "emptyDir": closed({"medium": {"enum": ["", "Memory"]}, "sizeLimit": QUANTITY}),
                 "persistentVolumeClaim": closed({"claimName": STR, "readOnly": BOOL}, ["claimName"]),
                 "secret": OBJ, "configMap": OBJ, "hostPath": OBJ, "csi": OBJ, "ephemeral": OBJ}, ["name"])
TOLERATION = closed({"key": STR, "operator": {"enum": ["Exists", "Equal"]}, "value": STR,
                     "effect": {"enum": ["NoSchedule", "PreferNoSchedule", "NoExecute"]}, "tolerationSeconds": INT})
POD_TEMPLATE = closed({
    "metadata": closed({"labels": STR_MAP, "annotations": STR_MAP}),
    "spec": closed({
        "containers": {**array(CONTAINER), "minItems": 1}, "initContainers": array(CONTAINER), "volumes": array(VOLUME),
        "tolerations": array(TOLERATION), "nodeSelector": STR_MAP, "affinity": OBJ, "serviceAccountName": STR,
        "restartPolicy": {"enum": ["Always", "OnFailure", "Never"]}, "imagePullSecrets": array(closed({"name": STR})),
        "securityContext": OBJ, "terminationGracePeriodSeconds": INT, "priorityClassName": STR, "schedulerName": STR,
    }, ["containers"]),
})
OBJECT_META = closed({"name": {"type": "string", "pattern": r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", "maxLength": 63},
                      "namespace": STR, "labels": STR_MAP, "annotations": STR_MAP}, ["name"])

AUTH_OPTIONS = closed({"mode": {"enum": ["disabled", "token"]}, "secretName": STR, "enableK8sTokenAuth": BOOL})
AUTOSCALER_OPTIONS = closed({
    "resources": RESOURCES, "image": STR, "imagePullPolicy": {"enum": ["Always", "IfNotPresent", "Never"]},
    "securityContext": OBJ, "idleTimeoutSeconds": COUNT, "upscalingMode": {"enum": ["Default", "Aggressive", "Conservative"]},
    "version": {"enum": ["v1", "v2"]}, "env": array(ENV_VAR), "envFrom": array(ENV_FROM),
    "volumeMounts": array(VOLUME_MOUNT), "command": array(STR), "args": array(STR),
})
HEAD_GROUP = closed({
    "template": POD_TEMPLATE, "headService": OBJ, "enableIngress": BOOL, "ingressOptions": OBJ,
    "resources": STR_MAP, "labels": STR_MAP, "rayStartParams": STR_MAP,
    "serviceType": {"enum": ["ClusterIP", "NodePort", "LoadBalancer", "ExternalName"]},
}, ["template", "rayStartParams"])
WORKER_GROUP = closed({
    "suspend": BOOL, "groupName": STR, "replicas": COUNT, "minReplicas": COUNT, "maxReplicas": COUNT,
    "idleTimeoutSeconds": COUNT, "priority": INT, "resources": STR_MAP, "labels": STR_MAP, "rayStartParams": STR_MAP,
    "template": POD_TEMPLATE, "scaleStrategy": closed({"workersToDelete": array(STR)}),
    "numOfHosts": {"type": "integer", "minimum": 1},
}, ["groupName", "template", "rayStartParams", "minReplicas", "maxReplicas"])
RAY_CLUSTER_SPEC = closed({
    "upgradeStrategy": closed({"type": {"enum": ["Recreate", "None"]}}), "authOptions": AUTH_OPTIONS,
    "suspend": BOOL, "managedBy": MANAGED_BY, "autoscalerOptions": AUTOSCALER_OPTIONS, "headServiceAnnotations": STR_MAP,
    "enableInTreeAutoscaling": BOOL, "gcsFaultToleranceOptions": OBJ, "historyServerOptions": OBJ,
    "networkPolicy": OBJ, "tlsOptions": closed({"enabled": BOOL}), "headGroupSpec": HEAD_GROUP, "rayVersion": STR,
    "workerGroupSpecs": array(WORKER_GROUP),
}, ["headGroupSpec"])
RAY_JOB_SPEC = closed({
    "activeDeadlineSeconds": {"type": "integer", "minimum": 1}, "backoffLimit": COUNT,
    "rayClusterSpec": RAY_CLUSTER_SPEC, "submitterPodTemplate": POD_TEMPLATE, "metadata": STR_MAP,
    "clusterSelector": STR_MAP, "submitterConfig": closed({"backoffLimit": COUNT}), "managedBy": MANAGED_BY,
    "deletionStrategy": OBJ, "entrypoint": STR, "runtimeEnvYAML": STR, "jobId": STR,
    "submissionMode": {"enum": ["K8sJobMode", "HTTPMode", "InteractiveMode", "SidecarMode"]},
    "entrypointResources": STR, "entrypointNumCpus": NUM, "entrypointNumGpus": NUM,
    "ttlSecondsAfterFinished": COUNT, "preRunningDeadlineSeconds": {"type": "integer", "minimum": 1},
    "shutdownAfterJobFinishes": BOOL, "suspend": BOOL,
})


def resource_schema(kind: str, spec: dict) -> dict:
    return closed({"apiVersion": {"const": "ray.io/v1"}, "kind": {"const": kind}, "metadata": OBJECT_META, "spec": spec},
                  ["apiVersion", "kind", "metadata", "spec"])


SCHEMAS = {"RayCluster": resource_schema("RayCluster", RAY_CLUSTER_SPEC), "RayJob": resource_schema("RayJob", RAY_JOB_SPEC)}


def crd_problems(doc: dict) -> list[str]:
    schema = SCHEMAS.get(doc.get("kind"))
    if schema is None:
        return [f"kind {doc.get('kind')!r}: expected one of {sorted(SCHEMAS)}"]
    return [f"CRD: {'.'.join(map(str, e.absolute_path)) or '(top)'}: {e.message}"
            for e in jsonschema.Draft202012Validator(schema).iter_errors(doc)]


def env(container: dict) -> dict[str, dict]:
    return {e["name"]: e for e in container.get("env", [])}


def token_problems(env_vars: dict[str, dict], where: str) -> list[str]:
    problems = []
    if env_vars.get("RAY_AUTH_MODE", {}).get("value") != "token":
        problems.append(f"{where}: RAY_AUTH_MODE is not 'token'")
    ref = env_vars.get("RAY_AUTH_TOKEN", {}).get("valueFrom", {}).get("secretKeyRef")
    if not ref or not ref.get("name"):
        problems.append(f"{where}: RAY_AUTH_TOKEN does not come from a Secret (valueFrom.secretKeyRef)")
    return problems


def cluster_problems(spec: dict, where: str) -> list[str]:
    """Deployment properties of a RayClusterSpec (a RayCluster's, or a RayJob's rayClusterSpec)."""
    problems = []
    head = spec["headGroupSpec"]
    groups = spec.get("workerGroupSpecs", [])
    ray_pods = [("head", head["template"]["spec"])] + [(f"worker group {g['groupName']}", g["template"]["spec"]) for g in groups]

    if spec.get("enableInTreeAutoscaling") is not True:
        problems.append(f"{where}: enableInTreeAutoscaling is not true (nothing would scale the GPU group)")
    if not DEPS["ray"].specifier.contains(spec.get("rayVersion", "")):
        problems.append(f"{where}: rayVersion {spec.get('rayVersion')!r} is outside pyproject's ray pin {DEPS['ray'].specifier}")

    gpu_groups = [g for g in groups if any("nvidia.com/gpu" in c.get("resources", {}).get("limits", {})
                                           for c in g["template"]["spec"]["containers"])]
    if not gpu_groups:
        problems.append(f"{where}: no worker group has an nvidia.com/gpu limit")
    for g in gpu_groups:
        gpus = g["template"]["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"]
        if not (isinstance(gpus, int) and gpus >= 1):
            problems.append(f"{where}: group {g['groupName']}: nvidia.com/gpu limit {gpus!r} (expected a whole number >= 1)")
        if g.get("minReplicas") != 0 or g.get("replicas", 0) != 0:
            problems.append(f"{where}: group {g['groupName']}: minReplicas={g.get('minReplicas')}, replicas={g.get('replicas')} "
                            "(expected 0 and 0: scale GPU pods from zero)")
        if g.get("maxReplicas", 0) < 1:
            problems.append(f"{where}: group {g['groupName']}: maxReplicas={g.get('maxReplicas')} (expected at least 1)")

    # The head Service stays inside the cluster network.
    service_type = head.get("serviceType", "ClusterIP")
    if service_type != "ClusterIP":
        problems.append(f"{where}: head serviceType {service_type} (expected ClusterIP; use kubectl port-forward)")
    if head.get("headService", {}).get("spec", {}).get("type", "ClusterIP") != "ClusterIP":
        problems.append(f"{where}: headService.spec.type is not ClusterIP")
    if head.get("enableIngress"):
        problems.append(f"{where}: enableIngress exposes the dashboard")

    # Token auth on every Ray container: by the operator (authOptions) or by env from a Secret.
    if spec.get("authOptions", {}).get("mode") != "token":
        for name, pod in ray_pods:
            problems += token_problems(env(pod["containers"][0]), f"{where}: {name}")
        if spec.get("enableInTreeAutoscaling"):
            problems += token_problems({e["name"]: e for e in spec.get("autoscalerOptions", {}).get("env", [])},
                                       f"{where}: autoscalerOptions")

    # Object-storage credentials reach every Ray pod (results are written from the workers).
    for name, pod in ray_pods:
        c = pod["containers"][0]
        if not pod.get("serviceAccountName") and not any("secretRef" in e for e in c.get("envFrom", [])):
            problems.append(f"{where}: {name}: no storage credentials (envFrom a Secret, or a serviceAccountName)")

    for name, pod in ray_pods:
        for c in pod.get("initContainers", []) + pod["containers"]:
            problems += secret_literal_problems(c, f"{where}: {name}: container {c['name']}")
            if not c.get("image", "").endswith(f"/scalesweep:{VERSION}"):
                problems.append(f"{where}: {name}: container {c['name']} image {c.get('image')!r} "
                                f"(expected <registry>/scalesweep:{VERSION}, built from deploy/Dockerfile)")
    return problems


def secret_literal_problems(container: dict, where: str) -> list[str]:
    return [f"{where}: {e['name']} is a literal value (expected valueFrom.secretKeyRef)"
            for e in container.get("env", []) if re.search(r"TOKEN|SECRET|PASSWORD|ACCESS_KEY", e["name"]) and "value" in e]


def entrypoint_problems(entrypoint: str) -> list[str]:
    from orchestrator.errors import UserError
    from orchestrator.spec import load_spec

    argv = shlex.split(entrypoint)
    expected = "python -m orchestrator.cli run SPEC --results s3://... (or scalesweep run ...)"
    if argv[:4] == ["python", "-m", "orchestrator.cli", "run"]:
        rest = argv[4:]
    elif argv[:2] == ["scalesweep", "run"]:
        rest = argv[2:]
    else:
        return [f"entrypoint {entrypoint!r}: expected {expected}"]
    if not rest:
        return [f"entrypoint: no spec (expected {expected})"]
    problems, spec_arg = [], rest[0]
    # The image has the specs under its WORKDIR; map the path back into this checkout.
    workdir = image_workdir().rstrip("/") + "/"
    local = ROOT / (spec_arg[len(workdir):] if spec_arg.startswith(workdir) else spec_arg)
    if Path(spec_arg).is_absolute() and not spec_arg.startswith(workdir):
        problems.append(f"entrypoint spec {spec_arg}: not under the image's WORKDIR {workdir}")
    elif not (local.is_file() and local.parent == ROOT / "specs"):
        problems.append(f"entrypoint spec {spec_arg}: no such file in specs/ of this repository")
    else:
        try:
            spec = load_spec(local)
        except UserError as e:
            problems.append(f"entrypoint spec {spec_arg}: {e}")
        else:
            results = rest[rest.index("--results") + 1] if "--results" in rest[:-1] else spec.results
            if not results.startswith(RESULT_SCHEMES):
                problems.append(f"entrypoint results {results!r}: expected object storage ({' or '.join(RESULT_SCHEMES)}), "
                                "which every node can reach")
    return problems


def rayjob_problems(job: dict) -> list[str]:
    spec, problems = job["spec"], []
    if ("rayClusterSpec" in spec) == ("clusterSelector" in spec):
        problems.append("RayJob: expected exactly one of rayClusterSpec and clusterSelector")
    if "rayClusterSpec" in spec:
        problems += cluster_problems(spec["rayClusterSpec"], "rayClusterSpec")
        if spec.get("shutdownAfterJobFinishes") is not True:
            problems.append("RayJob: shutdownAfterJobFinishes is not true (the GPU cluster would outlive the sweep)")
        if not isinstance(spec.get("ttlSecondsAfterFinished"), int):
            problems.append("RayJob: no ttlSecondsAfterFinished")
        auth_by_operator = spec["rayClusterSpec"].get("authOptions", {}).get("mode") == "token"
    else:
        auth_by_operator = False
    # The submitter pod calls the job API: it needs the token unless the operator injects it.
    if not auth_by_operator:
        template = spec.get("submitterPodTemplate")
        if spec.get("submissionMode", "K8sJobMode") == "K8sJobMode" and not template:
            problems.append("RayJob: no submitterPodTemplate carrying the token (or use authOptions)")
        elif template:
            problems += token_problems(env(template["spec"]["containers"][0]), "submitterPodTemplate")
    for c in (spec.get("submitterPodTemplate") or {}).get("spec", {}).get("containers", []):
        problems += secret_literal_problems(c, f"submitterPodTemplate: {c['name']}")
    problems += entrypoint_problems(spec.get("entrypoint", ""))
    return problems


def kuberay_problems(doc: dict) -> list[str]:
    problems = crd_problems(doc)
    if problems:
        return problems
    if doc["kind"] == "RayCluster":
        return cluster_problems(doc["spec"], "RayCluster")
    return rayjob_problems(doc)


@pytest.mark.parametrize("name", ["raycluster.yaml", "rayjob.yaml"])
def test_kuberay_manifest_is_valid(name):
    assert kuberay_problems(load(DEPLOY / "kuberay" / name)) == []


def test_rayjob_runs_on_the_same_cluster_as_raycluster():
    # One cluster definition: the RayJob's is a copy of the RayCluster's, kept identical.
    assert load(DEPLOY / "kuberay" / "rayjob.yaml")["spec"]["rayClusterSpec"] == load(DEPLOY / "kuberay" / "raycluster.yaml")["spec"]


def test_all_recipes_agree_on_ray_and_image():
    base = dockerfile_facts((DEPLOY / "Dockerfile").read_text())["from"]
    ray_version = re.search(r":(\d+\.\d+\.\d+)-", base)[1]
    assert load(DEPLOY / "kuberay" / "raycluster.yaml")["spec"]["rayVersion"] == ray_version
    assert load(DEPLOY / "cluster-aws.yaml")["docker"]["image"].endswith(f"/scalesweep:{VERSION}")


def _rc():
    return load(DEPLOY / "kuberay" / "raycluster.yaml")


def _gpu_group(doc):
    return doc["spec"]["workerGroupSpecs"][0]


def _head(doc):
    return doc["spec"]["headGroupSpec"]


def _worker_env(doc):
    return _gpu_group(doc)["template"]["spec"]["containers"][0]["env"]


@pytest.mark.parametrize("mutate, expected", [
    (lambda d: _gpu_group(d).update(minReplica=0), "'minReplica' was unexpected"),
    (lambda d: d["spec"].update(enableInTreeAutoScaling=True), "'enableInTreeAutoScaling' was unexpected"),
    (lambda d: _head(d)["template"]["spec"]["containers"][0].update(envfrom=[]), "'envfrom' was unexpected"),
    (lambda d: _gpu_group(d)["rayStartParams"].update({"num-cpus": 8}), "8 is not of type 'string'"),
    (lambda d: d["spec"].update(authOptions={"mode": "on"}), "'on' is not one of"),
    (lambda d: d.update(apiVersion="ray.io/v1alpha1"), "'ray.io/v1' was expected"),
    (lambda d: _gpu_group(d).update(minReplicas=1), "scale GPU pods from zero"),
    (lambda d: _gpu_group(d).update(replicas=2), "scale GPU pods from zero"),
    (lambda d: d["spec"].update(enableInTreeAutoscaling=False), "enableInTreeAutoscaling is not true"),
    (lambda d: d["spec"].update(rayVersion="2.59.0"), "outside pyproject's ray pin"),
    (lambda d: _head(d).update(serviceType="LoadBalancer"), "expected ClusterIP"),
    (lambda d: _head(d).update(headService={"spec": {"type": "NodePort"}}), "headService.spec.type"),
    (lambda d: _head(d).update(enableIngress=True), "enableIngress exposes"),
    (lambda d: _worker_env(d).__setitem__(1, {"name": "RAY_AUTH_TOKEN", "value": "abc"}), "does not come from a Secret"),
    (lambda d: _worker_env(d).__setitem__(0, {"name": "RAY_AUTH_MODE", "value": "disabled"}), "RAY_AUTH_MODE is not 'token'"),
    (lambda d: d["spec"]["autoscalerOptions"].pop("env"), "autoscalerOptions: RAY_AUTH_MODE"),
    (lambda d: _gpu_group(d)["template"]["spec"]["containers"][0].pop("envFrom"), "no storage credentials"),
    (lambda d: _gpu_group(d)["template"]["spec"]["containers"][0].update(image="rayproject/ray:2.60.0-py311-gpu"),
     "built from deploy/Dockerfile"),
])
def test_raycluster_check_catches(mutate, expected):
    doc = _rc()
    mutate(doc)
    problems = kuberay_problems(doc)
    assert any(expected in p for p in problems), problems


def test_operator_managed_auth_is_accepted_instead_of_env():
    # KubeRay >= 1.5.1: authOptions makes the operator set the token env itself.
    doc = _rc()
    spec = doc["spec"]
    spec["authOptions"] = {"mode": "token", "secretName": "scalesweep-ray-token"}
    spec["autoscalerOptions"].pop("env")
    for c in [_head(doc)["template"]["spec"]["containers"][0], _gpu_group(doc)["template"]["spec"]["containers"][0]]:
        c.pop("env")
    assert kuberay_problems(doc) == []


@pytest.mark.parametrize("mutate, expected", [
    (lambda s: s.update(entrypoint=s["entrypoint"].replace("gpu_sweep.yaml", "no_such_spec.yaml")), "no such file in specs/"),
    (lambda s: s.update(entrypoint=s["entrypoint"].replace("/home/ray/scalesweep/", "/opt/elsewhere/")), "not under the image's WORKDIR"),
    (lambda s: s.update(entrypoint=s["entrypoint"].replace("s3://my-bucket/sweeps", "results")), "expected object storage"),
    (lambda s: s.update(entrypoint="python train.py"), "expected python -m orchestrator.cli run"),
    (lambda s: s.update(shutdownAfterJobFinishes=False), "shutdownAfterJobFinishes is not true"),
    (lambda s: s.pop("ttlSecondsAfterFinished"), "no ttlSecondsAfterFinished"),
    (lambda s: s.pop("submitterPodTemplate"), "no submitterPodTemplate"),
    (lambda s: s.update(clusterSelector={"ray.io/cluster": "scalesweep"}), "exactly one of rayClusterSpec and clusterSelector"),
    (lambda s: s.update(ttlSecondsAfterFinshed=600), "'ttlSecondsAfterFinshed' was unexpected"),
    (lambda s: s.update(submissionMode="K8sMode"), "'K8sMode' is not one of"),
])
def test_rayjob_check_catches(mutate, expected):
    doc = load(DEPLOY / "kuberay" / "rayjob.yaml")
    mutate(doc["spec"])
    problems = kuberay_problems(doc)
    assert any(expected in p for p in problems), problems


def test_entrypoint_spec_is_validated_not_just_found(tmp_path, monkeypatch):
    import orchestrator.spec as spec_module

    broken = tmp_path / "gpu_sweep.yaml"
    broken.write_text((ROOT / "specs" / "gpu_sweep.yaml").read_text().replace("gpus: 0.25", "gpus: 1.5"))
    real = spec_module.load_spec
    monkeypatch.setattr(spec_module, "load_spec", lambda p: real(broken))
    problems = entrypoint_problems(load(DEPLOY / "kuberay" / "rayjob.yaml")["spec"]["entrypoint"])
    assert any("resources.gpus" in p for p in problems), problems


# ---------------------------------------------------------------------------------------
# specs/gpu_sweep.yaml: the sweep the recipes run


def test_gpu_spec_plans_on_a_token_file(tmp_path):
    """The spec loads, and plans into trials (which needs the corpus: two blocks of fake ids)."""
    from orchestrator.plan import TrialFactory, plan_trials
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
