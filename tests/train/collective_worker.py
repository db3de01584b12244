"""Multi-rank checks of the collectives and fault-tolerant accumulation, run as one process per
rank (see launch.py). Saves what each rank computed; the test compares."""

from __future__ import annotations

import sys

import torch
import torch.distributed as dist
from torch import nn

SIZES = (1, 7, 1000, 65539)
MICRO = 3


def micro_batches(rank: int) -> list[tuple[torch.Tensor, torch.Tensor, str]]:
    g = torch.Generator().manual_seed(100 + rank)
    out = []
    for i in range(MICRO):
        x, y = torch.randn(4, 5, generator=g), torch.randn(4, 1, generator=g)
        fault = ""
        if rank == 1 and i == 0:
            x = x.clone()
            x[0, 0] = float("nan")
            fault = "nan"
        if rank == 2:
            fault = "raise"
        out.append((x, y, fault))
    return out


def make_model() -> nn.Module:
    torch.manual_seed(11)
    return nn.Linear(5, 1)


def main() -> None:
    from modelplane.train.accumulation import FaultTolerantAccumulator
    from modelplane.train.collectives import HierarchicalAllReduce, NodeLayout, make_all_reduce

    out = sys.argv[1]
    import modelplane.train as mt

    ctx = mt.init(out + "/ck")
    rank, world = ctx.distributed.rank, ctx.distributed.world_size
    layout = NodeLayout.contiguous(world, ctx.distributed.local_world_size)
    hier = HierarchicalAllReduce(layout)
    auto = make_all_reduce(layout)
    result: dict[str, object] = {"choice": layout.choose()}
    for n in SIZES:
        x = torch.randn(n, generator=torch.Generator().manual_seed(rank * 1000 + n))
        flat = x.clone()
        dist.all_reduce(flat)
        h = x.clone()
        hier.all_reduce(h)
        a = x.clone()
        auto(a, average=True)
        result[f"flat{n}"], result[f"hier{n}"], result[f"avg{n}"] = flat, h, a

    model = make_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    acc = FaultTolerantAccumulator(model, opt)

    def loss_fn(batch: tuple[torch.Tensor, torch.Tensor, str]) -> torch.Tensor:
        x, y, fault = batch
        if fault == "raise":
            raise RuntimeError("simulated worker fault")
        return nn.functional.mse_loss(model(x), y)

    outcome = acc.step(micro_batches(rank), loss_fn)
    result["mask"] = outcome.mask
    result["survivors"] = outcome.survivors
    result["params"] = [p.detach().clone() for p in model.parameters()]
    result["stats"] = acc.stats.as_metrics()
    torch.save(result, f"{out}/rank{rank}.pt")
    ctx.close()


if __name__ == "__main__":
    main()
