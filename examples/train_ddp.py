"""A tiny but real data-parallel training run: 2 ranks, gloo, DistributedDataParallel.

Each rank trains a small regression model on its shard of a synthetic dataset; gradients are
averaged across ranks by DDP; the ranks check at the end that their weights are identical.
Run by modelplane (RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT come from the backend) or by hand:
    RANK=0 WORLD_SIZE=1 MASTER_ADDR=127.0.0.1 MASTER_PORT=29500 python examples/train_ddp.py
"""

import os

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

rank = int(os.environ["RANK"])
world = int(os.environ["WORLD_SIZE"])
dist.init_process_group("gloo", rank=rank, world_size=world)
print(f"rank {rank}/{world} on node {os.environ.get('MODELPLANE_NODE', '?')} "
      f"devices {os.environ.get('CUDA_VISIBLE_DEVICES', '-')}", flush=True)

torch.manual_seed(0)
true_w = torch.randn(16, 1)
x = torch.randn(512, 16)
y = x @ true_w + 0.01 * torch.randn(512, 1)
shard = slice(rank * len(x) // world, (rank + 1) * len(x) // world)

torch.manual_seed(1)
model = DistributedDataParallel(torch.nn.Linear(16, 1, bias=False))
opt = torch.optim.SGD(model.parameters(), lr=0.1)
for step in range(60):
    opt.zero_grad()
    loss = torch.nn.functional.mse_loss(model(x[shard]), y[shard])
    loss.backward()
    opt.step()
    if step % 20 == 0 or step == 59:
        print(f"rank {rank} step {step} loss {loss.item():.5f}", flush=True)

w = model.module.weight.detach().clone()
gathered = [torch.zeros_like(w) for _ in range(world)]
dist.all_gather(gathered, w)
assert all(torch.equal(g, w) for g in gathered), "ranks diverged"
print(f"rank {rank} done: final loss {loss.item():.5f}, weights identical across {world} ranks", flush=True)
# Every rank past its last collective before any tears down: a rank destroying its group while a
# peer's gloo transport still works on the last one aborted the peer (SIGABRT, seen once under CI load).
dist.barrier()
dist.destroy_process_group()
