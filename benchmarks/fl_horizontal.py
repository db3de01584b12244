"""Horizontal FL on Flower: FedAvg with and without SecAgg+ against centralized training.

Five parties, scikit-learn digits split by Dirichlet(0.5) label skew, multinomial logistic
regression; each party a real process (a Flower SuperNode) talking to a SuperLink over TCP on this
machine. The centralized baseline trains the same model with the same optimizer on the union of
the parties' data for as many passes as one party makes in the whole federation.

    .venv/bin/python benchmarks/fl_horizontal.py [--rounds 15 --local-epochs 5 --parties 5]

Prints one JSON object. Goals (issue #9): accuracy within 1 point of centralized; SecAgg+
overhead (seconds per round with / without) under 2x. Round time here is dominated by Flower's
per-message latency (SuperNode poll, one ClientApp process per message), which SecAgg+ pays four
times per round instead of once.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

import numpy as np

from modelplane.privacy.horizontal import local, model
from modelplane.privacy.horizontal.data import read_shard, write_digits_shards


def federated(work: Path, shards: dict[str, Path], test: Path, rounds: int, epochs: int, secagg: bool) -> dict[str, object]:
    args = ["--rounds", str(rounds), "--local-epochs", str(epochs), "--min-fit-parties", "3", "--round-timeout", "120"]
    out = local.run(work, shards, test, timeout=300 * rounds + 600, server_args=args + ([] if secagg else ["--no-secagg"]))
    per_round = [float(r["seconds"]) for r in out["metrics"]]
    return {"accuracy": out["accuracy"], "rounds": len(per_round),
            "seconds_per_round_median": statistics.median(per_round), "seconds_per_round_mean": statistics.fmean(per_round),
            "accuracy_by_round": [round(float(r["accuracy"]), 4) for r in out["metrics"]]}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--local-epochs", type=int, default=5)
    ap.add_argument("--parties", type=int, default=5)
    ap.add_argument("--alpha", type=float, default=0.5)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="fl-bench-") as tmp:
        root = Path(tmp)
        paths = write_digits_shards(root / "data", a.parties, a.alpha)
        test = paths.pop("test")
        xs, ys = zip(*(read_shard(p) for p in paths.values()), strict=True)
        x, y = np.concatenate(xs), np.concatenate(ys)
        xt, yt = read_shard(test)
        central = model.train_centralized(x, y, model.LocalConfig(epochs=a.rounds * a.local_epochs))
        central_acc = model.evaluate(central, xt, yt)[1]
        plain = federated(root / "plain", paths, test, a.rounds, a.local_epochs, secagg=False)
        secure = federated(root / "secagg", paths, test, a.rounds, a.local_epochs, secagg=True)
    overhead = float(secure["seconds_per_round_median"]) / float(plain["seconds_per_round_median"])  # type: ignore[arg-type]
    gap_plain = 100 * (central_acc - float(plain["accuracy"]))  # type: ignore[arg-type]
    gap_secure = 100 * (central_acc - float(secure["accuracy"]))  # type: ignore[arg-type]
    print(json.dumps({
        "setup": {"parties": a.parties, "dirichlet_alpha": a.alpha, "rounds": a.rounds, "local_epochs": a.local_epochs,
                  "model": "multinomial logistic regression (numpy)", "data": "sklearn digits, 70/30 split"},
        "centralized": {"accuracy": central_acc, "epochs": a.rounds * a.local_epochs},
        "fedavg": plain,
        "fedavg_secagg_plus": secure,
        "accuracy_gap_points": {"fedavg": round(gap_plain, 2), "fedavg_secagg_plus": round(gap_secure, 2), "goal": 1.0},
        "secagg_overhead_ratio": {"ours": round(overhead, 2), "goal": 2.0},
    }, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
