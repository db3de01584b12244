"""Hierarchical all-reduce equals a flat one, and fault-tolerant accumulation agrees across ranks
(4 real processes on gloo: 2 "nodes" x 2 ranks)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from modelplane.core.errors import InvalidSpec
from modelplane.train.collectives import NodeLayout, nccl_settings
from tests.train.collective_worker import SIZES, make_model, micro_batches
from tests.train.launch import launch

WORLD = 4


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> list[dict]:
    out = tmp_path_factory.mktemp("collectives")
    launch("collective_worker.py", WORLD, [str(out)], extra_env={"LOCAL_WORLD_SIZE": "2"})
    return [torch.load(out / f"rank{r}.pt") for r in range(WORLD)]


@pytest.mark.integration
def test_hierarchical_equals_flat_all_reduce(results: list[dict]) -> None:
    for r in results:
        assert r["choice"] == "hierarchical"
        for n in SIZES:
            torch.testing.assert_close(r[f"hier{n}"], r[f"flat{n}"], rtol=1e-5, atol=1e-5)
            torch.testing.assert_close(r[f"avg{n}"], r[f"flat{n}"] / WORLD, rtol=1e-5, atol=1e-5)
    for n in SIZES:  # every rank holds the same sum
        torch.testing.assert_close(results[0][f"hier{n}"], results[3][f"hier{n}"])


@pytest.mark.integration
def test_accumulation_agrees_on_survivors_and_averages_them(results: list[dict]) -> None:
    expected_mask = [[True] * 3, [False, True, True], [False] * 3, [True] * 3]
    model = make_model()
    grads = [torch.zeros_like(p) for p in model.parameters()]
    survivors = 0
    for rank in range(WORLD):
        for (x, y, _), ok in zip(micro_batches(rank), expected_mask[rank], strict=True):
            if not ok:
                continue
            model.zero_grad()
            nn.functional.mse_loss(model(x), y).backward()
            for g, p in zip(grads, model.parameters(), strict=True):
                g.add_(p.grad)
            survivors += 1
    with torch.no_grad():
        expected = [p - 0.5 * g / survivors for p, g in zip(model.parameters(), grads, strict=True)]
    for r in results:
        assert r["mask"] == expected_mask and r["survivors"] == survivors == 8
        for got, want in zip(r["params"], expected, strict=True):
            torch.testing.assert_close(got, want)
    assert results[2]["stats"]["modelplane_train_microbatches_dropped_total"] == 3


def test_layout_choice_and_errors() -> None:
    assert NodeLayout.contiguous(8, 4).choose() == "hierarchical"
    assert NodeLayout.contiguous(4, 4).choose() == "flat"
    assert NodeLayout.contiguous(4, 1).choose() == "flat"
    with pytest.raises(InvalidSpec, match="cannot be split"):
        NodeLayout.contiguous(6, 4)
    with pytest.raises(InvalidSpec, match="different numbers"):
        _ = NodeLayout((0, 0, 1)).ranks_per_node


def test_nccl_settings_for_roce_and_tcp() -> None:
    roce = nccl_settings(ib_hcas=["mlx5_0", "mlx5_1"], socket_ifname="eth0", roce=True, algorithm="Ring")
    assert roce == {
        "NCCL_IB_HCA": "mlx5_0,mlx5_1",
        "NCCL_IB_GID_INDEX": "3",
        "NCCL_IB_TC": "106",
        "NCCL_SOCKET_IFNAME": "eth0",
        "GLOO_SOCKET_IFNAME": "eth0",
        "NCCL_ALGO": "Ring",
    }
    assert nccl_settings()["NCCL_IB_DISABLE"] == "1"
    with pytest.raises(InvalidSpec, match="NCCL algorithm"):
        nccl_settings(algorithm="Butterfly")
