"""Rendering placed jobs as Kubernetes objects, checked against the Kubernetes OpenAPI schemas.

Every job kind is rendered for every supported cluster version and both pinning modes, and each
object is validated with ``kubernetes-validate`` in strict mode (unknown fields are errors).
"""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from modelplane.backends.base import TaskLaunch
from modelplane.backends.k8s_render import (
    JOB_LABEL,
    RenderOptions,
    constraints_from_manifest,
    job_label,
    render_job,
)
from modelplane.core.errors import InvalidSpec
from modelplane.core.spec import parse_manifest, template_for, to_workload

try:
    import kubernetes_validate
except ImportError:  # pragma: no cover - the message is the point
    pytest.fail("kubernetes-validate is missing: .venv/bin/pip install kubernetes-validate "
                "(or pip install 'modelplane[k8s]')", pytrace=False)

SUPPORTED_VERSIONS = ("1.35.0", "1.36.0", "1.37.0")
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
JOB_KINDS = ("TrainingJob", "InferenceDeployment", "Pipeline", "FederatedJob")
DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")

FEDERATED: dict[str, Any] = {
    "apiVersion": "modelplane/v1", "kind": "FederatedJob",
    "metadata": {"name": "fl-demo", "team": "privacy"},
    "spec": {
        "queue": "training", "rounds": 2,
        "server": {"command": ["python", "-m", "fl.server"], "image": "registry.local/fl:1",
                   "resources": {"cpu": "1", "memory": "1Gi"}},
        "parties": [
            {"name": "bank-a", "template": {"command": ["python", "-m", "fl.party"], "image": "registry.local/fl:1",
                                            "resources": {"cpu": "2", "memory": "2Gi", "accelerators": 1,
                                                          "acceleratorModel": "AMD-MI250"}},
             "nodeSelector": {"site": "a"}},
            {"name": "bank-b", "template": {"command": ["python", "-m", "fl.party"], "image": "registry.local/fl:1",
                                            "resources": {"cpu": "2", "memory": "2Gi", "accelerators": 2,
                                                          "acceleratorModel": "Ascend-910B"}},
             "nodeSelector": {"site": "b"}},
        ],
        "tolerations": [{"key": "modelplane.io/npu", "operator": "Exists", "effect": "NoSchedule"}],
    },
}
NODE_FOR_MODEL = {"NVIDIA-A100": "gpu-a100-0", "AMD-MI250": "amd-0", "Ascend-910B": "npu-0", None: "cpu-0"}


def manifests() -> dict[str, Any]:
    out = {p.stem: yaml.safe_load(p.read_text()) for p in sorted(EXAMPLES.glob("*.yaml"))
           if yaml.safe_load(p.read_text()).get("kind") in JOB_KINDS}
    out["federated"] = FEDERATED
    return out


def placed_tasks(doc: dict[str, Any], job_id: str = "job-0001") -> list[TaskLaunch]:
    """The TaskLaunches the job controller would build for a placement of ``doc``."""
    manifest = parse_manifest(doc)
    workload = to_workload(manifest, job_id, 0.0)
    tasks = []
    rank = 0
    world = sum(ps.count for ps in workload.pod_sets)
    for ps in workload.pod_sets:
        tmpl = template_for(manifest, ps.name)
        model = ps.request.gpu_models[0] if ps.request.gpu_models else None
        for index in range(ps.count):
            tasks.append(TaskLaunch(
                job_id=job_id, job_name=manifest.metadata.name, pod_set=ps.name, index=index, rank=rank,
                world_size=world, node=f"{NODE_FOR_MODEL.get(model, 'gpu-0')}-{index}", command=list(tmpl.command),
                env=dict(tmpl.env), working_dir=tmpl.working_dir,
                devices=tuple(range(ps.request.gpu_count)), gpu_milli=ps.request.gpu_milli,
                accelerator_model=model, master_port=29500, image=tmpl.image))
            rank += 1
    return tasks


def render(name: str, pinning: str = "nodeName", job_id: str = "job-0001") -> tuple[Any, dict[str, Any]]:
    doc = manifests()[name]
    manifest = parse_manifest(doc)
    opts = RenderOptions(namespace="ml", pinning=pinning, default_image="registry.local/modelplane:1")  # type: ignore[arg-type]
    return render_job(placed_tasks(doc, job_id), constraints_from_manifest(manifest), opts), doc


KINDS = sorted(manifests())


@pytest.mark.parametrize("version", SUPPORTED_VERSIONS)
@pytest.mark.parametrize("pinning", ["nodeName", "scheduler"])
@pytest.mark.parametrize("name", KINDS)
def test_every_kind_validates_against_the_kubernetes_schemas(name: str, pinning: str, version: str) -> None:
    rendered, _ = render(name, pinning)
    kinds = [o["kind"] for o in rendered.objects()]
    assert kinds.count("Service") == 1 and kinds.count("Pod") == len(rendered.pods) >= 1
    assert kinds.count("Binding") == (len(rendered.pods) if pinning == "scheduler" else 0)
    for obj in rendered.objects():
        kubernetes_validate.validate(obj, version, strict=True)


def test_validation_is_not_vacuous() -> None:
    rendered, _ = render("training-job")
    broken = copy.deepcopy(rendered.pods[0])
    broken["spec"]["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"] = {"terms": []}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, SUPPORTED_VERSIONS[-1], strict=True)
    typo = copy.deepcopy(rendered.pods[0])
    typo["spec"]["nodename"] = "x"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(typo, SUPPORTED_VERSIONS[-1], strict=True)


def test_training_pods_carry_the_manifests_exact_affinity_and_rendezvous() -> None:
    rendered, doc = render("training-job")
    svc = rendered.service
    assert svc["spec"]["clusterIP"] == "None" and svc["spec"]["publishNotReadyAddresses"] is True
    pods = rendered.pods
    assert len(pods) == 2
    master = f"{pods[0]['metadata']['name']}.{svc['metadata']['name']}"
    for rank, pod in enumerate(pods):
        spec = pod["spec"]
        assert spec["affinity"] == doc["spec"]["affinity"]  # exactly what the user wrote
        assert spec["nodeName"] == f"gpu-a100-0-{rank}" and "schedulerName" not in spec
        assert spec["hostname"] == pod["metadata"]["name"] and spec["subdomain"] == svc["metadata"]["name"]
        assert spec["restartPolicy"] == "Never"
        assert all(pod["metadata"]["labels"][k] == v for k, v in svc["spec"]["selector"].items())
        env = {e["name"]: e["value"] for e in spec["containers"][0]["env"]}
        assert env["RANK"] == str(rank) and env["WORLD_SIZE"] == "2" and env["MASTER_ADDR"] == master
        assert env["MASTER_PORT"] == "29500" and env["NODE_RANK"] == str(rank) and env["LOCAL_RANK"] == "0"
        assert "CUDA_VISIBLE_DEVICES" not in env  # the device plugin sets it
        res = spec["containers"][0]["resources"]
        assert res["limits"]["nvidia.com/gpu"] == "1"
        assert res["requests"] == {"cpu": "1", "memory": "2048Mi"} and res["limits"]["memory"] == "2048Mi"
    assert pods[0]["spec"]["containers"][0]["ports"][0]["containerPort"] == 29500


def test_vendor_resource_keys_tolerations_and_selectors() -> None:
    rendered, _ = render("federated")
    by_set = {p["metadata"]["labels"]["modelplane.io/pod-set"]: p for p in rendered.pods}
    assert set(by_set) == {"server", "party-bank-a", "party-bank-b"}
    limits = {k: v["spec"]["containers"][0]["resources"].get("limits", {}) for k, v in by_set.items()}
    assert limits["party-bank-a"]["amd.com/gpu"] == "1"
    assert limits["party-bank-b"]["huawei.com/Ascend910"] == "2"
    assert not any(k.endswith("/gpu") or "Ascend" in k for k in limits["server"])
    assert by_set["party-bank-a"]["spec"]["nodeSelector"] == {"site": "a"}
    assert "nodeSelector" not in by_set["server"]["spec"]
    for pod in rendered.pods:
        assert pod["spec"]["tolerations"] == FEDERATED["spec"]["tolerations"]
        assert pod["spec"]["containers"][0]["image"] == "registry.local/fl:1"  # the manifest's own image


def test_fractional_accelerators_ask_for_one_device_and_say_the_share() -> None:
    rendered, _ = render("inference-deployment")
    for pod in rendered.pods:
        assert pod["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "1"
        assert pod["metadata"]["annotations"]["modelplane.io/gpu-milli"] == "500"


def test_scheduler_pinning_names_modelplane_and_binds_each_pod_to_its_node() -> None:
    rendered, _ = render("training-job", pinning="scheduler")
    for pod, binding in zip(rendered.pods, rendered.bindings, strict=True):
        assert pod["spec"]["schedulerName"] == "modelplane" and "nodeName" not in pod["spec"]
        assert binding["metadata"]["name"] == pod["metadata"]["name"]
        assert binding["target"] == {"apiVersion": "v1", "kind": "Node", "name": pod["metadata"]["annotations"]["modelplane.io/node"]}


def test_a_job_without_image_is_refused_with_the_fix() -> None:
    doc = manifests()["training-job"]
    tasks = placed_tasks(doc)
    with pytest.raises(InvalidSpec, match="image") as err:
        render_job(tasks, None, RenderOptions())
    assert "spec.template.image" in (err.value.hint or "")


@settings(max_examples=60, deadline=None)
@given(job_name=st.from_regex(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?", fullmatch=True),
       job_id=st.text(min_size=1, max_size=120).filter(lambda s: s not in (".", "..")),
       ranks=st.integers(min_value=1, max_value=12))
def test_names_and_labels_are_always_valid_kubernetes_names(job_name: str, job_id: str, ranks: int) -> None:
    tasks = [TaskLaunch(job_id=job_id, job_name=job_name, pod_set="worker", index=r, rank=r, world_size=ranks,
                        node=f"n{r}", command=["true"], image="img") for r in range(ranks)]
    rendered = render_job(tasks)
    names = {p["metadata"]["name"] for p in rendered.pods}
    assert len(names) == ranks
    for name in [*names, rendered.service["metadata"]["name"]]:
        assert DNS_LABEL.match(name), name
    label = job_label(job_id)
    assert re.fullmatch(r"([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]", label) and len(label) <= 63
    assert all(p["metadata"]["labels"][JOB_LABEL] == label for p in rendered.pods)
    assert all(p["metadata"]["annotations"]["modelplane.io/job-id"] == job_id for p in rendered.pods)
