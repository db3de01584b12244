"""The planner against SC'21 Table 1 and its own invariants (pure, no torch)."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from modelplane.train.errors import InvalidParallelConfig
from modelplane.train.planner import (
    Cluster,
    ParallelConfig,
    TransformerShape,
    best_for_layout,
    device,
    launch_settings,
    predict,
    problems,
    recommend,
    render_table,
)
from modelplane.train.planner.memory import activation_bytes_per_layer, state_bytes_per_param

TABLE = (
    Path(__file__).resolve().parents[2].parent / "shared" / "data" / "anchors" / "megatron-sc21-table1.csv"
)


def _rows() -> list[dict[str, str]]:
    if not TABLE.exists():
        pytest.fail(
            f"{TABLE} is missing: the shared data folder must sit beside the repo (../shared)", pytrace=False
        )
    with TABLE.open() as fh:
        return list(csv.DictReader(fh))


def _published(row: dict[str, str]) -> tuple[TransformerShape, Cluster, ParallelConfig]:
    shape = TransformerShape(int(row["layers"]), int(row["hidden"]), int(row["heads"]), 51200, 2048)
    n, t, p = int(row["gpus"]), int(row["tensor_parallel"]), int(row["pipeline_parallel"])
    cfg = ParallelConfig(n // (t * p), t, p, 1, int(row["global_batch"]), recompute="full")
    return shape, Cluster(device("a100-80gb"), n), cfg


def test_parameter_count_matches_the_table() -> None:
    for row in _rows():
        shape, _c, _cfg = _published(row)
        assert shape.parameters / 1e9 == pytest.approx(
            float(row["params_billion"]), rel=0.03
        )  # the table rounds 1.65 to 1.7


def test_predicted_throughput_within_15_percent_of_sc21_table1() -> None:
    for row in _rows():
        shape, cluster, cfg = _published(row)
        pred = best_for_layout(shape, cluster, cfg)
        measured = float(row["tflops_per_gpu"]) * 1e12
        assert pred.flops_per_gpu == pytest.approx(measured, rel=0.15), row["params_billion"]


def test_recommended_config_no_worse_than_published() -> None:
    for row in _rows()[:6]:  # the largest rows take longer to enumerate; the benchmark covers all
        shape, cluster, cfg = _published(row)
        published = best_for_layout(shape, cluster, cfg)
        best = recommend(shape, cluster, cfg.global_batch, top=1)[0]
        assert best.tokens_per_s >= published.tokens_per_s * 0.999
        assert best.memory.total <= cluster.device.memory_bytes


def test_validation_names_every_problem() -> None:
    shape = TransformerShape(24, 2304, 24, 51200, 2048)
    cluster = Cluster(device("a100-80gb"), 32)
    bad = ParallelConfig(data=3, tensor=16, pipeline=5, micro_batch=3, global_batch=512)
    reasons = " | ".join(problems(shape, bad, cluster))
    for needle in (
        "= 240, but 32",
        "tensor parallel 16 exceeds",
        "does not divide the 24 layers",
        "not a multiple",
    ):
        assert needle in reasons
    with pytest.raises(InvalidParallelConfig, match="devices are placed"):
        predict(shape, bad, cluster)


def test_memory_rejection_says_how_much() -> None:
    shape = TransformerShape(96, 12288, 96, 51200, 2048)  # GPT-3 175B
    cluster = Cluster(device("a100-80gb"), 8)
    with pytest.raises(InvalidParallelConfig, match=r"needs \d+\.\d GB per device"):
        predict(shape, ParallelConfig(1, 8, 1, 1, 8), cluster)


def test_memory_formulas() -> None:
    assert state_bytes_per_param(0, 64) == 16
    assert state_bytes_per_param(1, 4) == 4 + 3
    assert state_bytes_per_param(3, 16) == 1
    shape = TransformerShape(24, 1024, 16, 50000, 2048)
    s, b, h, a = 2048, 2, 1024, 16
    base = dict(data=1, pipeline=1, micro_batch=b, global_batch=b)
    full = ParallelConfig(tensor=4, recompute="full", **base)  # type: ignore[arg-type]
    sel_sp = ParallelConfig(tensor=4, recompute="selective", sequence_parallel=True, **base)  # type: ignore[arg-type]
    none = ParallelConfig(tensor=4, recompute="none", **base)  # type: ignore[arg-type]
    assert activation_bytes_per_layer(shape, full) == 2 * s * b * h
    assert activation_bytes_per_layer(shape, sel_sp) == 34 * s * b * h / 4
    assert activation_bytes_per_layer(shape, none) == pytest.approx(
        s * b * h * (10 + 24 / 4 + 5 * a * s / (h * 4))
    )


@settings(max_examples=25, deadline=None)
@given(
    layers=st.sampled_from([8, 12, 24]),
    hidden_heads=st.sampled_from([(512, 8), (1024, 16), (2048, 16)]),
    gpus=st.sampled_from([1, 2, 4, 8, 16]),
    gb_mult=st.sampled_from([1, 4, 16]),
    mem_gb=st.sampled_from([8, 16, 80]),
)
def test_recommendations_are_valid_and_sorted(
    layers: int, hidden_heads: tuple[int, int], gpus: int, gb_mult: int, mem_gb: int
) -> None:
    hidden, heads = hidden_heads
    shape = TransformerShape(layers, hidden, heads, 32000, 1024)
    dev = device("a100-80gb")
    cluster = Cluster(type(dev)("test", mem_gb * 1e9, dev.peak_flops), gpus)
    try:
        ranked = recommend(shape, cluster, gpus * gb_mult, top=20)
    except InvalidParallelConfig:
        return  # nothing fits: covered by its own message
    speeds = [p.tokens_per_s for p in ranked]
    assert speeds == sorted(speeds, reverse=True)
    for pr in ranked:
        assert not problems(shape, pr.config, cluster)
        assert pr.memory.total <= cluster.device.memory_bytes
        assert pr.config.gpus == gpus
        assert 0 < pr.mfu < 1


def test_more_micro_batches_shrink_the_bubble() -> None:
    shape, cluster, cfg = _published(_rows()[6])
    small = predict(
        shape, cfg.__class__(**{**cfg.__dict__, "global_batch": 240}), cluster, check_memory=False
    )
    large = predict(shape, cfg, cluster, check_memory=False)
    assert small.time.bubble / small.time.compute > large.time.bubble / large.time.compute


def test_launch_settings_and_table() -> None:
    shape, cluster, cfg = _published(_rows()[7])
    best = best_for_layout(shape, cluster, cfg)
    s = launch_settings(shape, best.config, cluster)
    assert "--nnodes=240" in s.torchrun and "--nproc-per-node=8" in s.torchrun
    assert (
        "--tensor-model-parallel-size=8" in s.megatron and "--pipeline-model-parallel-size=16" in s.megatron
    )
    assert s.deepspeed["train_batch_size"] == 2160
    assert s.env["MODELPLANE_PARALLELISM"].startswith("data=15,tensor=8,pipeline=16")
    table = render_table([best])
    assert "tok/s" in table and table.count("\n") == 2
