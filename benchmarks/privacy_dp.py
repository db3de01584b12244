"""DP-SGD accuracy against epsilon on scikit-learn's digits (MLP 64-64-10), with the non-private baseline.

For each noise multiplier the same model, data, batch size and epochs are trained with Opacus;
epsilon is the PRV accountant's at delta=1e-5 (RDP alongside). Also checks the accountant against
the published MNIST setting (q=256/60000, sigma=1.1, 14,062 steps). Writes a PNG of the curve to
``--out-dir`` (default benchmarks/out/, git-ignored; never into the shared data folder); prints one
JSON object with the PNG's absolute path; progress goes to stderr.

    PYTHONPATH=src .venv/bin/python benchmarks/privacy_dp.py [--out-dir /tmp/bench]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import torch

from modelplane.privacy.adversarial import accuracy
from modelplane.privacy.dp import DPConfig, epsilon_for, train_dp

EPOCHS = 15
BATCH = 64
LR = 0.5
SIGMAS = [0.5, 0.7, 1.0, 1.5, 2.5, 4.0]


def data() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    d = load_digits()
    xa, xb, ya, yb = train_test_split(d.data / 16.0, d.target, test_size=0.3, random_state=0, stratify=d.target)
    f = torch.float32
    return torch.tensor(xa, dtype=f), torch.tensor(ya), torch.tensor(xb, dtype=f), torch.tensor(yb)


def model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.ReLU(), torch.nn.Linear(64, 10))


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--out-dir", type=Path, default=Path(__file__).resolve().parent / "out",
                    help="where the PNG goes (created if missing)")
    args = ap.parse_args(argv)
    warnings.filterwarnings("ignore")
    x, y, xt, yt = data()

    def loader() -> Any:
        torch.manual_seed(0)
        return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=BATCH, shuffle=True)

    base = model()
    opt = torch.optim.SGD(base.parameters(), lr=LR)
    started = time.perf_counter()
    for _ in range(EPOCHS):
        for xb, yb in loader():
            opt.zero_grad()
            loss: Any = torch.nn.functional.cross_entropy(base(xb), yb)
            loss.backward()
            opt.step()
    baseline = {"test_accuracy": round(accuracy(base, xt, yt), 4), "seconds": round(time.perf_counter() - started, 2)}
    points = []
    for sigma in SIGMAS:
        print(f"DP-SGD sigma={sigma} ...", file=sys.stderr)
        m = model()
        started = time.perf_counter()
        m, report = train_dp(m, torch.optim.SGD(m.parameters(), lr=LR), loader(), torch.nn.functional.cross_entropy,
                             epochs=EPOCHS, config=DPConfig(noise_multiplier=sigma, max_grad_norm=1.0), seed=0)
        steps = report.epochs[-1].steps
        points.append({
            "noise_multiplier": sigma, "epsilon_prv": round(report.epsilon, 3),
            "epsilon_rdp": round(epsilon_for(sigma, 1 / len(loader()), steps, 1e-5, "rdp"), 3),
            "test_accuracy": round(accuracy(m, xt, yt), 4), "steps": steps,
            "seconds": round(time.perf_counter() - started, 2),
        })
    for p in points:
        p["accuracy_ratio_vs_nonprivate"] = round(p["test_accuracy"] / baseline["test_accuracy"], 4)
    png = args.out_dir.resolve() / "privacy_dp_curve.png"
    png.parent.mkdir(parents=True, exist_ok=True)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.plot([p["epsilon_prv"] for p in points], [p["test_accuracy"] for p in points], "o-", label="DP-SGD (Opacus)")
    ax.axhline(baseline["test_accuracy"], color="gray", ls="--", label="non-private")
    ax.set_xscale("log")
    ax.set_xlabel("epsilon (PRV, delta=1e-5)")
    ax.set_ylabel("test accuracy (digits)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(png, dpi=120)
    print(json.dumps({
        "benchmark": "privacy_dp", "dataset": "sklearn digits, 70/30 split", "model": "MLP 64-64-10",
        "epochs": EPOCHS, "batch_size": BATCH, "delta": 1e-5, "max_grad_norm": 1.0,
        "baseline_nonprivate": baseline, "ours_dp_sgd": points,
        "accountant_check_mnist": {
            "rdp": round(epsilon_for(1.1, 256 / 60000, 14062, 1e-5, "rdp"), 3),
            "prv": round(epsilon_for(1.1, 256 / 60000, 14062, 1e-5, "prv"), 3),
            "anchor": "2.60 RDP / 2.38 PLD",
        },
        "png": str(png),
    }, indent=1))


if __name__ == "__main__":
    main()
