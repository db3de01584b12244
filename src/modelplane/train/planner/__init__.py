"""Hybrid-parallelism planner: validate a data x tensor x pipeline configuration, predict memory
per device and throughput, recommend the best, and emit launch settings. Pure (no torch)."""

from __future__ import annotations

from modelplane.train.planner.launch import LaunchSettings, launch_settings
from modelplane.train.planner.memory import MemoryEstimate, estimate_memory
from modelplane.train.planner.search import Prediction, best_for_layout, predict, problems, recommend
from modelplane.train.planner.shapes import DEVICES, Cluster, Device, ParallelConfig, TransformerShape, device
from modelplane.train.planner.table import render_table
from modelplane.train.planner.throughput import Calibration, StepTime, step_time

__all__ = [
    "DEVICES",
    "Calibration",
    "Cluster",
    "Device",
    "LaunchSettings",
    "MemoryEstimate",
    "ParallelConfig",
    "Prediction",
    "StepTime",
    "TransformerShape",
    "best_for_layout",
    "device",
    "estimate_memory",
    "launch_settings",
    "predict",
    "problems",
    "recommend",
    "render_table",
    "step_time",
]
