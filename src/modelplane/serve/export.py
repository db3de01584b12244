"""Export a PyTorch module to ONNX, validate it with onnx.checker and compare outputs numerically.

The TorchScript-based exporter (``dynamo=False``) is the default: it works offline with torch 2.13
alone. The dynamo exporter needs ``onnxscript`` (pip install onnxscript) and is used on request.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np

from modelplane.serve._deps import require
from modelplane.serve.errors import ModelValidationFailed


@dataclass(frozen=True)
class ExportReport:
    """What the export produced and how far ONNX outputs are from the source model's."""

    onnx_bytes: bytes
    opset: int
    exporter: str
    max_abs_diff: float
    rtol: float
    atol: float


def validate_onnx(model_bytes: bytes) -> None:
    """Run onnx.checker (full check, shape inference included); raise with the checker's message."""
    onnx = require("onnx")
    try:
        proto = onnx.load_from_string(model_bytes)
        onnx.checker.check_model(proto, full_check=True)
    except Exception as exc:  # onnx raises ValidationError, DecodeError, InferenceError...
        raise ModelValidationFailed(
            f"the ONNX model failed validation: {exc}",
            hint="re-export the model (modelplane.serve.export.export_torch) or fix the graph",
            field="model",
        ) from exc


def export_torch(
    module: Any,
    example_input: Any,
    *,
    opset: int = 17,
    exporter: str = "torchscript",
    rtol: float = 1e-4,
    atol: float = 1e-5,
    compare_batch: int = 8,
    seed: int = 0,
) -> ExportReport:
    """Export ``module`` with a dynamic batch axis and prove the ONNX graph computes the same function.

    The comparison runs the source model and onnxruntime on ``compare_batch`` random rows shaped like
    ``example_input`` (a batch size the export never saw, to exercise the dynamic axis).
    """
    torch = require("torch", extra="train")
    ort = require("onnxruntime")
    module = module.eval()
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if exporter == "torchscript":
            torch.onnx.export(
                module, (example_input,), buf, dynamo=False, opset_version=opset,
                input_names=["input"], output_names=["output"],
                dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}},
            )
        elif exporter == "dynamo":
            require("onnxscript", extra="serve")
            batch = torch.export.Dim("batch", min=1)
            program = torch.onnx.export(
                module, (example_input,), dynamo=True, opset_version=opset,
                input_names=["input"], output_names=["output"], dynamic_shapes=({0: batch},),
            )
            program.save(buf)
        else:
            raise ModelValidationFailed(f"unknown exporter {exporter!r}", hint="use 'torchscript' or 'dynamo'")
    data = buf.getvalue()
    validate_onnx(data)
    gen = torch.Generator().manual_seed(seed)
    probe = torch.randn((compare_batch, *tuple(example_input.shape[1:])), generator=gen, dtype=example_input.dtype)
    with torch.no_grad():
        expected = module(probe).numpy()
    sess = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    got = sess.run(None, {sess.get_inputs()[0].name: probe.numpy()})[0]
    diff = float(np.max(np.abs(expected - got))) if expected.size else 0.0
    if expected.shape != got.shape or not np.allclose(expected, got, rtol=rtol, atol=atol):
        raise ModelValidationFailed(
            f"ONNX outputs differ from the PyTorch model (max abs diff {diff:.3g}, shapes {expected.shape} vs {got.shape})",
            hint="check for ops the exporter does not support, or loosen rtol/atol if the difference is expected",
        )
    return ExportReport(data, opset, exporter, diff, rtol, atol)
