import pytest

from modelplane.core.accelerators import AMD, ASCEND, GAUDI, NVIDIA, family_of_model
from modelplane.core.errors import InvalidSpec
from modelplane.core.quantity import parse_accelerators, parse_cpu_milli, parse_memory_mib
from modelplane.core.spec import parse_manifest, to_workload
from tests.helpers import training_doc


@pytest.mark.parametrize(("value", "milli"), [("500m", 500), ("2", 2000), (1.5, 1500), ("0.25", 250)])
def test_cpu(value, milli):
    assert parse_cpu_milli(value) == milli


@pytest.mark.parametrize(("value", "mib"), [("16Gi", 16384), ("512Mi", 512), ("1G", 954), (1048576, 1)])
def test_memory(value, mib):
    assert parse_memory_mib(value) == mib


@pytest.mark.parametrize(("value", "result"), [(0, (0, 0)), (0.46, (1, 460)), (1, (1, 1000)), ("8", (8, 1000))])
def test_accelerators(value, result):
    assert parse_accelerators(value) == result


@pytest.mark.parametrize("bad", ["1.5", "-1", "lots"])
def test_bad_accelerators(bad):
    with pytest.raises(InvalidSpec) as e:
        parse_accelerators(bad)
    assert e.value.field == "accelerators"


def test_vendor_families():
    assert family_of_model("NVIDIA-A100") is NVIDIA
    assert family_of_model("V100M16") is NVIDIA
    assert family_of_model("AMD-MI250") is AMD
    assert family_of_model("MI300X") is AMD
    assert family_of_model("Ascend-910B") is ASCEND
    assert family_of_model("Gaudi2") is GAUDI
    assert AMD.visibility([0, 2]) == {"HIP_VISIBLE_DEVICES": "0,2", "ROCR_VISIBLE_DEVICES": "0,2"}
    assert ASCEND.visibility([3]) == {"ASCEND_RT_VISIBLE_DEVICES": "3"}
    assert GAUDI.visibility([1]) == {"HABANA_VISIBLE_MODULES": "1"}


def test_manifest_to_workload():
    m = parse_manifest(training_doc(replicas=4, accelerators=0.5, deadline="2030-01-01T00:00:00Z"))
    w = to_workload(m, "id1", 10.0, priority=7)
    assert (w.task_count, w.gang, w.priority, w.queue) == (4, True, 7, "training")
    assert w.pod_sets[0].request.gpu_milli == 500
    assert w.total_gpu_milli == 2000
    assert w.deadline is not None


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (lambda d: d.update(apiVersion="v2"), "apiVersion"),
        (lambda d: d.update(kind="CronJob"), "kind"),
        (lambda d: d["metadata"].update(name="Bad_Name"), "metadata.name"),
        (lambda d: d["spec"].pop("queue"), "spec.queue"),
        (lambda d: d["spec"].update(replicaz=2), "spec.replicaz"),
        (lambda d: d["spec"]["template"]["resources"].update(memory="lots"), "spec.template.resources.memory"),
        (lambda d: d["spec"]["template"].update(command=[]), "spec.template.command"),
        (lambda d: d["spec"].update(affinity={"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
            "nodeSelectorTerms": [{"matchExpressions": [{"key": "a", "operator": "In"}]}]}}}), "spec.affinity"),
    ],
)
def test_bad_manifests_name_the_field(mutate, field):
    doc = training_doc()
    mutate(doc)
    with pytest.raises(InvalidSpec) as e:
        parse_manifest(doc)
    assert e.value.field.startswith(field)
    assert e.value.hint


def test_every_example_manifest_is_valid():
    import pathlib

    import yaml

    from modelplane.core.cluster import parse_cluster

    root = pathlib.Path(__file__).resolve().parents[2] / "examples"
    kinds = set()
    for path in sorted(root.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc["kind"] == "Cluster":
                parse_cluster(doc)
            else:
                kinds.add(parse_manifest(doc).kind)
    assert {"TrainingJob", "InferenceDeployment", "Pipeline"} <= kinds


def test_parallelism_must_match_the_ranks():
    ok = parse_manifest(training_doc(replicas=8, parallelism={"data": 2, "tensor": 2, "pipeline": 2,
                                                              "microBatchSize": 4}))
    assert ok.spec.parallelism.world_size == 8 and ok.spec.parallelism.micro_batch_size == 4
    with pytest.raises(InvalidSpec) as e:
        parse_manifest(training_doc(replicas=4, parallelism={"data": 2, "tensor": 4}))
    assert e.value.field == "spec" and "must equal replicas (4)" in e.value.message
