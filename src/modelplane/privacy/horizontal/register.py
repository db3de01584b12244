"""The federation's final model into the model registry, like any trained model.

The server task exports the aggregated multinomial logistic regression to ONNX (input ``input``
float32 [batch, 64], output ``output`` [batch, 10] class probabilities: the same interface as the
digits models deployments serve), proves onnxruntime computes what the numpy model computes, and
registers it with its job as the training run, so the lineage graph has training run -> model.

Where: the registry the API and deployments use, handed to every task by the job controller as
``MODELPLANE_MODEL_REGISTRY_URL``; the lineage graph at ``MODELPLANE_LINEAGE_URL``. Why the task
writes the registry itself rather than calling the API: tasks carry no user credential, and the
registry validates every model before it becomes a version, exactly as the API's route does.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from modelplane.privacy.errors import PrivacyError
from modelplane.privacy.horizontal import model
from modelplane.privacy.horizontal.data import CLASSES, FEATURES

REGISTRY_URL_ENV = "MODELPLANE_MODEL_REGISTRY_URL"
LINEAGE_URL_ENV = "MODELPLANE_LINEAGE_URL"
OPSET = 17


def to_onnx(params: model.Params) -> bytes:
    """``softmax(x @ W + b)`` as an ONNX graph with a dynamic batch axis."""
    from modelplane.serve._deps import require

    require("onnx", extra="serve")
    from onnx import TensorProto, helper, numpy_helper

    w, b = (np.asarray(p, dtype=np.float32) for p in params)
    if w.shape != (FEATURES, CLASSES) or b.shape != (CLASSES,):
        raise PrivacyError(
            f"expected W {(FEATURES, CLASSES)} and b {(CLASSES,)}, got {w.shape} and {b.shape}"
        )
    x = helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", FEATURES])
    y = helper.make_tensor_value_info("output", TensorProto.FLOAT, ["batch", CLASSES])
    graph = helper.make_graph(
        [
            helper.make_node("Gemm", ["input", "W", "b"], ["logits"]),
            helper.make_node("Softmax", ["logits"], ["output"], axis=1),
        ],
        "modelplane_fl_logreg",
        [x],
        [y],
        initializer=[numpy_helper.from_array(w, "W"), numpy_helper.from_array(b, "b")],
    )
    proto = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="modelplane.privacy.horizontal"
    )
    proto.ir_version = 8  # what onnxruntime releases of the last years all read
    return bytes(proto.SerializeToString())


def check_onnx(onnx_bytes: bytes, params: model.Params, x: np.ndarray, atol: float = 1e-5) -> float:
    """onnx.checker, then onnxruntime against numpy on ``x``: the largest absolute difference.

    Raises if the graph is invalid or disagrees: a model that does not compute what was trained
    must not become a version.
    """
    from modelplane.serve._deps import require
    from modelplane.serve.export import validate_onnx

    validate_onnx(onnx_bytes)
    ort = require("onnxruntime", extra="serve")
    sess = ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
    got = sess.run(None, {"input": np.asarray(x, dtype=np.float32)})[0]
    logits = x @ params[0] + params[1]
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    want = e / e.sum(axis=1, keepdims=True)
    diff = float(np.max(np.abs(got - want))) if len(x) else 0.0
    if not diff <= atol:
        raise PrivacyError(f"the exported ONNX model differs from the trained one by {diff:g} (> {atol:g})")
    return diff


def register(
    out_dir: Path,
    name: str,
    training_run: str,
    *,
    registry_url: str,
    lineage_url: str = "",
    probe: np.ndarray | None = None,
) -> dict[str, Any]:
    """Register ``out_dir/model.npz`` as the next version of ``name``; what was registered.

    Also writes ``out_dir/model.onnx`` and ``out_dir/registered.json``.
    """
    from modelplane.serve.registry import Lineage, ModelRegistry

    with np.load(out_dir / "model.npz") as z:
        params = [np.asarray(z["W"], dtype=np.float64), np.asarray(z["b"], dtype=np.float64)]
    onnx_bytes = to_onnx(params)
    rng = np.random.default_rng(0)
    x = probe if probe is not None else rng.random((16, FEATURES))
    diff = check_onnx(onnx_bytes, params, x)
    (out_dir / "model.onnx").write_bytes(onnx_bytes)
    hooks: list[Any] = []
    if lineage_url:
        from modelplane.data.lineage import open_platform_lineage
        from modelplane.data.lineage_hooks import ModelLineageHook

        hooks.append(ModelLineageHook(open_platform_lineage(lineage_url)))
    summary: dict[str, Any] = {}
    with contextlib.suppress(OSError, ValueError):  # the metadata is a convenience; the model is what counts
        summary = json.loads((out_dir / "summary.json").read_text())
    metadata = {
        "bytes": len(onnx_bytes),
        "content_type": "application/octet-stream",
        "kind": "FederatedJob",
        "accuracy": summary.get("accuracy"),
        "rounds": summary.get("rounds"),
        "secagg": summary.get("secagg"),
        "strategy": summary.get("strategy"),
        "parties": summary.get("parties"),
        "onnx_max_abs_diff": diff,
    }
    registry = ModelRegistry(registry_url, lineage_hooks=hooks)
    mv = registry.register(
        name, onnx_bytes, now=time.time(), metadata=metadata, lineage=Lineage(training_run=training_run)
    )
    out = {
        "name": mv.name,
        "version": mv.version,
        "ref": mv.ref,
        "uri": mv.uri,
        "stage": mv.stage.value,
        "training_run": training_run,
    }
    (out_dir / "registered.json").write_text(json.dumps(out, indent=1))
    return out


def register_from_env(
    out_dir: Path, name: str | None, probe: np.ndarray | None = None
) -> dict[str, Any] | None:
    """Register when the platform says where (``MODELPLANE_MODEL_REGISTRY_URL``); None when it does not
    (a federation run by hand, or by the tests and benchmark, has no registry)."""
    url = os.environ.get(REGISTRY_URL_ENV, "")
    job = os.environ.get("MODELPLANE_JOB_NAME", "")
    if not url:
        return None
    model_name = name or job
    if not model_name:
        raise PrivacyError(
            "no model name to register the federation's model under",
            hint="pass --model-name, or run it as a job (MODELPLANE_JOB_NAME names it)",
        )
    return register(
        out_dir,
        model_name,
        job,
        registry_url=url,
        lineage_url=os.environ.get(LINEAGE_URL_ENV, ""),
        probe=probe,
    )
