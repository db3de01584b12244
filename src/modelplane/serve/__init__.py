"""Serving runtime: ONNX model registry, replicas with dynamic batching, a guarded gateway.

Runtime library: imports ``modelplane.core`` only (never the API, the store or the controllers).
Heavy dependencies (onnx, onnxruntime, torch, scikit-learn) are imported lazily with an install hint.
"""
