"""A differentially private (and optionally adversarially trained) MLP on scikit-learn's digits:
the training script of ``examples/dp-training-job.yaml``.

The privacy options are not in this script: they come from the job's ``spec.privacy`` through
``modelplane.train.make_private`` (DP-SGD with Opacus, FGSM/PGD adversarial examples). The same
script without a privacy block trains a plain model. Each epoch's epsilon goes into the rank's
heartbeat and from there into the job's events; when one more epoch would exceed the budget the
loop ends, a final checkpoint is written and the script exits 0. By hand, one process::

    PYTHONPATH=src python examples/train_dp_digits.py --epochs 3 --out /tmp/dp.json   # plain
    MODELPLANE_PRIVACY_SPEC='{"differentialPrivacy": {"targetEpsilon": 3, "delta": 1e-5, "epochs": 3}}' \\
        PYTHONPATH=src python examples/train_dp_digits.py --epochs 3

Output: ``epoch E loss L epsilon X test_accuracy A`` per epoch, then one JSON summary line (also
written to ``--out``): epochs run, epsilon per epoch, whether the budget stopped training, clean
and (with an adversarial block) robust test accuracy.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any


def digits() -> tuple[Any, Any, Any, Any]:
    """Digits scaled to [0, 1] (the attack's input range), 70/30 stratified split."""
    import torch
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    d = load_digits()
    xa, xb, ya, yb = train_test_split(d.data / 16.0, d.target, test_size=0.3, random_state=0, stratify=d.target)
    f = torch.float32
    return torch.tensor(xa, dtype=f), torch.tensor(ya), torch.tensor(xb, dtype=f), torch.tensor(yb)


def train(epochs: int, batch_size: int, lr: float, seed: int, out: str | None) -> int:
    import torch
    from torch import nn

    import modelplane.train as mt
    from modelplane.privacy.adversarial import accuracy

    torch.manual_seed(seed)
    x, y, xt, yt = digits()
    model = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=batch_size, shuffle=True)

    ctx = mt.init(seed=seed, asynchronous=False)
    priv = mt.make_private(model, optimizer, loader, context=ctx, epochs=epochs)
    model, optimizer, loader = priv.model, priv.optimizer, priv.data_loader
    ctx.checkpoint.track(**priv.checkpointables())
    resumed = ctx.checkpoint.resume()
    if resumed is not None:
        print(f"resumed from step {resumed} (epoch {len(priv.log)}, epsilon {priv.epsilon()})", flush=True)
    if priv.enabled:
        print(f"DP-SGD: noise multiplier {priv.noise_multiplier:.3f}, sampling rate {priv.sample_rate:.4f}, "
              f"{priv.steps_per_epoch} steps/epoch", flush=True)
    step = priv.steps
    for epoch in priv.epochs(epochs):
        model.train()
        total, batches = 0.0, 0
        for xb, yb in loader:
            optimizer.zero_grad()
            loss = priv.loss(xb, yb)
            loss.backward()
            optimizer.step()
            step += 1
            total += float(loss.detach())
            batches += 1
            ctx.heartbeat.beat(step, loss=float(loss.detach()))
        budget = priv.end_epoch(loss=total / max(batches, 1))
        acc = accuracy(model, xt, yt)
        eps = "-" if budget.epsilon is None else f"{budget.epsilon:.4f}"
        print(f"epoch {epoch + 1} loss {total / max(batches, 1):.4f} epsilon {eps} test_accuracy {acc:.4f}",
              flush=True)
        ctx.checkpoint.save(step)
    if priv.exhausted:
        print(f"privacy budget exhausted: stopped after epoch {len(priv.log)} of {epochs}", flush=True)
    ctx.close()  # commits the last checkpoint (the final one when the budget stopped training)
    summary: dict[str, Any] = {
        "epochs_run": len(priv.log), "epochs_planned": epochs, "steps": priv.steps,
        "budget_exhausted": priv.exhausted, "epsilon_per_epoch": [e.get("epsilon") for e in priv.log],
        "target_epsilon": priv.dp.target_epsilon if priv.dp else None, "delta": priv.dp.delta if priv.dp else None,
        "test_accuracy": round(accuracy(model, xt, yt), 4), "resumed_from": resumed,
    }
    cfg = priv.attack_config()
    if cfg is not None:
        summary["adversarial"] = priv.adversarial.method if priv.adversarial else None
        summary["robust_test_accuracy"] = round(accuracy(model, xt, yt, cfg), 4)
    text = json.dumps(summary)
    print(text, flush=True)
    if out:
        with open(out, "w") as fh:
            fh.write(text + "\n")
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--epochs", type=int, default=8, help="planned epochs (the budget may stop training sooner)")
    ap.add_argument("--batch-size", type=int, default=64, help="expected batch size (Poisson-sampled under DP)")
    ap.add_argument("--lr", type=float, default=0.5, help="SGD learning rate")
    ap.add_argument("--seed", type=int, default=0, help="model and data-order seed")
    ap.add_argument("--out", default=None, help="also write the JSON summary here")
    args = ap.parse_args(argv)
    try:
        return train(args.epochs, args.batch_size, args.lr, args.seed, args.out)
    except mt_errors() as exc:  # a clear message, not a traceback: a bad spec or a budget too small to start
        print(f"error: {exc}", file=sys.stderr)
        return 2


def mt_errors() -> type[Exception]:
    from modelplane.core.errors import ModelplaneError

    return ModelplaneError


if __name__ == "__main__":
    raise SystemExit(main())
