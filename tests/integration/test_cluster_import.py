"""`modelplane cluster import --kubeconfig`: nodes read with the official client over HTTP.

The API server here is the in-memory Kubernetes API of tests/backends/test_k8s_backend.py (no real
kube-apiserver can run on this machine); the client, kubeconfig loading and node mapping are real.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tests.backends.test_k8s_backend import FakeKubeApiServer
from tests.integration.conftest import Server

pytestmark = pytest.mark.integration


def test_import_nodes_from_a_kubeconfig(server: Server, tmp_path: Path) -> None:
    api = FakeKubeApiServer()
    api.thread.start()
    try:
        api.nodes = [
            {"apiVersion": "v1", "kind": "Node", "metadata": {"name": "k8s-gpu-0", "labels": {
                "nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3", "topology.kubernetes.io/zone": "z1"}},
             "spec": {}, "status": {"allocatable": {"cpu": "32", "memory": "256Gi", "nvidia.com/gpu": "8"},
                                    "conditions": [{"type": "Ready", "status": "True"}]}},
            {"apiVersion": "v1", "kind": "Node", "metadata": {"name": "k8s-npu-0", "labels": {}},
             "spec": {"unschedulable": True},
             "status": {"allocatable": {"cpu": "16", "memory": "64Gi", "huawei.com/Ascend910": "4"},
                        "conditions": [{"type": "Ready", "status": "True"}]}},
        ]
        kubeconfig = tmp_path / "kubeconfig"
        kubeconfig.write_text(yaml.safe_dump({
            "apiVersion": "v1", "kind": "Config", "current-context": "t",
            "clusters": [{"name": "t", "cluster": {"server": api.url}}],
            "contexts": [{"name": "t", "context": {"cluster": "t", "user": "u"}}],
            "users": [{"name": "u", "user": {"token": "x"}}]}))
        r = server.cli("cluster", "import", "--kubeconfig", str(kubeconfig))
        assert r.returncode == 0, r.stderr
        assert "imported 2 node(s)" in r.stdout and "cordoned k8s-npu-0" in r.stdout
        r = server.cli("get", "nodes")
        assert "8 x NVIDIA-H100-80GB-HBM3" in r.stdout and "Cordoned" in r.stdout
    finally:
        api.httpd.shutdown()
        api.httpd.server_close()


def test_import_needs_exactly_one_source(server: Server) -> None:
    r = server.cli("cluster", "import")
    assert r.returncode == 2 and "exactly one source" in r.stderr
