"""A data-parallel training script that survives being killed: run it as a TrainingJob with
``restartPolicy.maxRestarts`` and the platform relaunches it after a failure; it resumes from the
newest complete checkpoint at the exact next sample, so the end state equals a run that never
stopped (same seed, same data order).

Everything it needs from the platform comes through ``modelplane.train.init()``: rank and
rendezvous (RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT), the checkpoint URL (stable per job name),
the heartbeat file the job controller watches, and the preemption notice. By hand, one process::

    PYTHONPATH=src python examples/train_resumable.py --steps 20 --out /tmp/result.pt

Output: ``rank R step S loss L`` after every step (L is the global mean loss, identical on every
rank), ``rank R resumed from step S`` after a restart; rank 0 writes ``--out`` at the end (final
parameters, the step resumed from, the losses of this attempt). The model and data are tiny and
synthetic; ``--step-delay`` stretches a step so that there is a "middle of the run" to fail in.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

DATASET_LEN = 128
GLOBAL_BATCH = 8
FEATURES = 12
HIDDEN = 32


def make_data(seed: int) -> tuple[Any, Any]:
    import torch

    g = torch.Generator().manual_seed(seed)
    x = torch.randn(DATASET_LEN, FEATURES, generator=g)
    y = (x @ torch.randn(FEATURES, 1, generator=g)).squeeze(1) + 0.1 * torch.randn(DATASET_LEN, generator=g)
    return x, y


def make_model(seed: int) -> Any:
    import torch
    from torch import nn

    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(FEATURES, HIDDEN), nn.Tanh(), nn.Linear(HIDDEN, 1))


def make_optim(model: Any) -> tuple[Any, Any]:
    import torch

    opt = torch.optim.AdamW(model.parameters(), lr=0.01)
    return opt, torch.optim.lr_scheduler.StepLR(opt, step_size=10, gamma=0.8)


def make_sampler(rank: int, world: int, seed: int) -> Any:
    from modelplane.train.data_position import ResumableBatchSampler

    return ResumableBatchSampler(DATASET_LEN, global_batch_size=GLOBAL_BATCH, rank=rank, world_size=world,
                                 seed=seed)


def reference_run(steps: int, seed: int = 0) -> tuple[dict[str, Any], list[float]]:
    """The same job in one process, never interrupted: (final parameters, loss per step).

    Any world size reproduces it (allclose): the global batch is fixed and DDP averages gradients
    of equal per-rank shares, which is the gradient of the global mean loss."""
    from torch import nn

    x, y = make_data(seed)
    model = make_model(seed)
    opt, sched = make_optim(model)
    sampler = make_sampler(0, 1, seed)
    losses: list[float] = []
    while len(losses) < steps:
        for idx in sampler:
            loss = nn.functional.mse_loss(model(x[idx]).squeeze(1), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            sampler.advance()
            losses.append(float(loss.detach()))
            if len(losses) == steps:
                break
    return {k: v.detach().clone() for k, v in model.state_dict().items()}, losses


def train(steps: int, save_every: int, seed: int, step_delay: float, out: str | None) -> int:
    import torch
    import torch.distributed as dist
    from torch import nn

    import modelplane.train as mt

    ctx = mt.init(policy=mt.SavePolicy(every_steps=save_every), seed=seed)
    rank, world = ctx.distributed.rank, ctx.distributed.world_size
    x, y = make_data(seed)
    model = make_model(seed)
    ddp = nn.parallel.DistributedDataParallel(model) if world > 1 else model
    opt, sched = make_optim(model)
    sampler = make_sampler(rank, world, seed)
    ctx.checkpoint.track(model=ddp, optimizer=opt, scheduler=sched, data=sampler)
    resumed = ctx.checkpoint.resume()
    step = resumed or 0
    if resumed is not None:
        print(f"rank {rank} resumed from step {resumed}", flush=True)
    ctx.heartbeat.beat(step)
    losses: dict[int, float] = {}
    stopped = False
    while step < steps and not stopped:
        for idx in sampler:
            loss = nn.functional.mse_loss(ddp(x[idx]).squeeze(1), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            sampler.advance()
            step += 1
            shown = loss.detach().clone()
            if world > 1:  # the global mean loss, so every rank prints the same curve
                dist.all_reduce(shown)
                shown /= world
            losses[step] = float(shown)
            print(f"rank {rank} step {step} loss {losses[step]:.6f}", flush=True)
            ctx.heartbeat.beat(step, loss=losses[step])
            if ctx.checkpoint.maybe_save(step).stop:  # preemption notice or SIGTERM: saved, exit 0
                stopped = True
                break
            if step >= steps:
                break
            if step_delay:
                time.sleep(step_delay)
    ctx.close()
    if rank == 0 and out:
        torch.save({"step": step, "resumed_from": resumed, "preempted": stopped, "losses": losses,
                    "params": {k: v.detach().clone() for k, v in model.state_dict().items()}}, out)
    print(f"rank {rank} {'stopped' if stopped else 'finished'} at step {step}", flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=40, help="optimizer steps in the whole run")
    ap.add_argument("--save-every", type=int, default=4, help="checkpoint every N steps")
    ap.add_argument("--seed", type=int, default=0, help="model, data and data-order seed")
    ap.add_argument("--step-delay", type=float, default=0.0, help="seconds to sleep after each step")
    ap.add_argument("--out", default=None, help="rank 0 writes final parameters and losses here (torch.save)")
    args = ap.parse_args(argv)
    return train(args.steps, args.save_every, args.seed, args.step_delay, args.out)


if __name__ == "__main__":
    raise SystemExit(main())
