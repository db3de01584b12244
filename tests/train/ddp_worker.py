"""A small DDP training job used by the multi-process tests: run as a real process per rank with
RANK / WORLD_SIZE / MASTER_ADDR / MASTER_PORT set, as the local backend launches it.

    python ddp_worker.py --ckpt DIR --steps 8 --out result.pt [--sigterm-at 4] [--dropout 0.1]

Exit 0 when finished, 0 with ``preempted`` in the result file when stopped by SIGTERM.
"""

from __future__ import annotations

import argparse
import os
import signal

import torch
from torch import nn

DATASET_LEN = 96
GLOBAL_BATCH = 8
FEATURES = 12


def make_data(seed: int = 1234) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(DATASET_LEN, FEATURES, generator=g)
    y = (x @ torch.randn(FEATURES, 1, generator=g)).squeeze(1) + 0.1 * torch.randn(DATASET_LEN, generator=g)
    return x, y


def make_model(dropout: float) -> nn.Module:
    torch.manual_seed(7)
    return nn.Sequential(nn.Linear(FEATURES, 32), nn.ReLU(), nn.Dropout(dropout), nn.Linear(32, 1))


def make_optim(model: nn.Module) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:
    opt = torch.optim.AdamW(model.parameters(), lr=0.01)
    return opt, torch.optim.lr_scheduler.StepLR(opt, step_size=3, gamma=0.7)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--ckpt", required=True)
    ap.add_argument("--steps", type=int, required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--save-every", type=int, default=2)
    ap.add_argument("--sigterm-at", type=int, default=0)
    ap.add_argument("--dropout", type=float, default=0.0)
    args = ap.parse_args()

    import modelplane.train as mt
    from modelplane.train.data_position import ResumableBatchSampler
    from modelplane.train.policy import SavePolicy

    ctx = mt.init(checkpoint_url=args.ckpt, policy=SavePolicy(every_steps=args.save_every), seed=7)
    rank, world = ctx.distributed.rank, ctx.distributed.world_size
    x, y = make_data()
    model = make_model(args.dropout)
    ddp = torch.nn.parallel.DistributedDataParallel(model) if world > 1 else model
    opt, sched = make_optim(model)
    sampler = ResumableBatchSampler(
        DATASET_LEN, global_batch_size=GLOBAL_BATCH, rank=rank, world_size=world, seed=3
    )
    ctx.checkpoint.track(model=ddp, optimizer=opt, scheduler=sched, data=sampler)
    step = ctx.checkpoint.resume() or 0
    preempted = False
    while step < args.steps:
        for idx in sampler:
            loss = nn.functional.mse_loss(ddp(x[idx]).squeeze(1), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            sampler.advance()
            step += 1
            ctx.heartbeat.beat(step)
            if step == args.sigterm_at and rank == world - 1:
                os.kill(os.getpid(), signal.SIGTERM)
            decision = ctx.checkpoint.maybe_save(step)
            if decision.stop:
                preempted = True
                break
            if step >= args.steps:
                break
        if preempted:
            break
    ctx.close()
    if rank == 0:
        torch.save(
            {
                "step": step,
                "preempted": preempted,
                "resumed_from": ctx.checkpoint.resumed_step,
                "params": {k: v.detach().clone() for k, v in model.state_dict().items()},
            },
            args.out,
        )


if __name__ == "__main__":
    main()
