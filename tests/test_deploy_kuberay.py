"""deploy/kuberay/*.yaml checked without a Kubernetes cluster: against the ray.io/v1 CRD
fields they use (the subset written out below from KubeRay's generated API reference, with
``additionalProperties: false`` on every object it covers so a misspelt field fails), then
the deployment properties: GPU group from zero, token from a Secret, no public head Service,
an entrypoint whose spec exists and loads. Shared helpers live in test_deploy.py.

Each checker returns a list of problems. Tests assert that the shipped files have none and,
for every check, that a broken copy is caught, so no check passes vacuously.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import jsonschema
import pytest

from conftest import ROOT
from test_deploy import DEPLOY, DEPS, RESULT_SCHEMES, VERSION, dockerfile_facts, image_workdir, load

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


