"""One ONNX model in onnxruntime, with the input contract checked before a tensor reaches it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from modelplane.serve._deps import require
from modelplane.serve.errors import BadInput

_ORT_DTYPES = {
    "tensor(float)": np.float32,
    "tensor(double)": np.float64,
    "tensor(int64)": np.int64,
    "tensor(int32)": np.int32,
    "tensor(float16)": np.float16,
    "tensor(bool)": np.bool_,
}


@dataclass(frozen=True)
class TensorSpec:
    """Name, per-row shape (batch axis removed) and dtype of the model's input."""

    name: str
    row_shape: tuple[int | None, ...]
    dtype: str

    def describe(self) -> str:
        dims = ", ".join("?" if d is None else str(d) for d in self.row_shape)
        return f"[batch, {dims}] of {self.dtype}" if dims else f"[batch] of {self.dtype}"


class OnnxModel:
    """An onnxruntime session whose first axis is the batch axis.

    ``intra_op_threads`` defaults to 1 so several replicas share a CPU host without oversubscribing it.
    """

    def __init__(self, model: str | bytes, *, intra_op_threads: int = 1) -> None:
        ort = require("onnxruntime")
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = intra_op_threads
        opts.inter_op_num_threads = 1
        self._session = ort.InferenceSession(model, sess_options=opts, providers=["CPUExecutionProvider"])
        inputs = self._session.get_inputs()
        if len(inputs) != 1:
            raise BadInput(
                f"the model has {len(inputs)} inputs; the replica serves single-input models",
                hint="export the model with one input tensor (concatenate features)",
            )
        inp = inputs[0]
        dtype = _ORT_DTYPES.get(inp.type)
        if dtype is None:
            raise BadInput(f"unsupported input type {inp.type}", hint=f"use one of {sorted(_ORT_DTYPES)}")
        self._np_dtype = dtype
        rows = tuple(d if isinstance(d, int) else None for d in inp.shape[1:])
        self.input = TensorSpec(inp.name, rows, np.dtype(dtype).name)
        self.output_names = [o.name for o in self._session.get_outputs()]

    def coerce(self, data: Any) -> np.ndarray:
        """Turn JSON rows into the input tensor, or raise BadInput naming the expected shape and dtype."""
        want = self.input.describe()
        try:
            arr: np.ndarray = np.asarray(data, dtype=self._np_dtype)
        except (TypeError, ValueError) as exc:
            raise BadInput(
                f"inputs cannot be read as {self.input.dtype}: {exc}",
                hint=f"send 'inputs' as a nested list shaped {want}",
                field="inputs",
            ) from exc
        if arr.ndim != len(self.input.row_shape) + 1 or any(
            d is not None and d != a for d, a in zip(self.input.row_shape, arr.shape[1:], strict=False)
        ):
            raise BadInput(
                f"inputs have shape {list(arr.shape)}, expected {want}",
                hint="send a list of rows; each row must match the model's input shape",
                field="inputs",
            )
        if arr.shape[0] == 0:
            raise BadInput("inputs hold no rows", hint=f"send at least one row shaped {want}", field="inputs")
        return arr

    def run(self, batch: np.ndarray) -> np.ndarray:
        """Run one batch; returns the first output."""
        out = self._session.run(self.output_names[:1], {self.input.name: batch})
        return np.asarray(out[0])
