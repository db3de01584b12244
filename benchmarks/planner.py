"""Planner vs SC'21 Table 1 (Narayanan et al., Megatron-LM on up to 3,072 A100s).

For each row: the planner's predicted TFLOP/s per GPU for the published dp x tp x pp layout
(best micro-batch / interleave, full recomputation as published) against the measured figure;
the planner's own best configuration (with SC'21's options: full recomputation, no sequence
parallelism; and with every option) and its predicted throughput against the published one;
and a leave-one-out check of the two fitted calibration constants (fit on 9 rows, predict the 10th).

    PYTHONPATH=src .venv/bin/python benchmarks/planner.py
"""

from __future__ import annotations

import csv
import itertools
import json
import math
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from modelplane.train.planner import (  # noqa: E402
    Calibration,
    Cluster,
    ParallelConfig,
    TransformerShape,
    best_for_layout,
    device,
    recommend,
)
from modelplane.train.planner.search import candidates  # noqa: E402

TABLE = REPO.parent / "shared" / "data" / "anchors" / "megatron-sc21-table1.csv"


def published(row: dict[str, str]) -> tuple[TransformerShape, Cluster, ParallelConfig]:
    shape = TransformerShape(int(row["layers"]), int(row["hidden"]), int(row["heads"]), 51200, 2048)
    n, t, p = int(row["gpus"]), int(row["tensor_parallel"]), int(row["pipeline_parallel"])
    return (
        shape,
        Cluster(device("a100-80gb"), n),
        ParallelConfig(n // (t * p), t, p, 1, int(row["global_batch"]), recompute="full"),
    )


def log_errors(rows: list[dict[str, str]], cal: Calibration) -> list[float]:
    out = []
    for row in rows:
        shape, cluster, cfg = published(row)
        pred = best_for_layout(shape, cluster, cfg, cal)
        out.append(math.log(pred.flops_per_gpu / 1e12 / float(row["tflops_per_gpu"])))
    return out


def fit(rows: list[dict[str, str]]) -> Calibration:
    grid = itertools.product([0.55, 0.6, 0.65, 0.7, 0.75], [200, 400, 800, 1200, 1600])
    return min(
        (Calibration(pf, hh) for pf, hh in grid), key=lambda c: max(abs(e) for e in log_errors(rows, c))
    )


def main() -> None:
    if not TABLE.exists():
        raise SystemExit(f"{TABLE} missing: clone the shared data folder beside the repo")
    rows = list(csv.DictReader(TABLE.open()))
    t0 = time.perf_counter()
    default = Calibration()
    out_rows = []
    for row in rows:
        shape, cluster, cfg = published(row)
        pub = best_for_layout(shape, cluster, cfg, default)
        best = recommend(shape, cluster, cfg.global_batch, default, top=1)[0]
        sc21_space = candidates(
            shape, cluster, cfg.global_batch, recompute=("full",), sequence_parallel=(False,)
        )
        best_sc21 = recommend(shape, cluster, cfg.global_batch, default, top=1, space=sc21_space)[0]
        measured = float(row["tflops_per_gpu"])
        out_rows.append(
            {
                "params_billion": float(row["params_billion"]),
                "published": pub.config.describe(),
                "measured_tflops_per_gpu": measured,
                "predicted_tflops_per_gpu": round(pub.flops_per_gpu / 1e12, 1),
                "ratio_predicted_to_measured": round(pub.flops_per_gpu / 1e12 / measured, 3),
                "predicted_memory_gb": round(pub.memory.total / 1e9, 1),
                "planner_best": best.config.describe(),
                "planner_best_mfu": round(best.mfu, 3),
                "ratio_best_to_published_tokens_per_s": round(best.tokens_per_s / pub.tokens_per_s, 3),
                "planner_best_with_sc21_options": best_sc21.config.describe(),
                "ratio_best_sc21_options_to_published": round(best_sc21.tokens_per_s / pub.tokens_per_s, 3),
                "same_layout_as_published": (
                    best_sc21.config.data,
                    best_sc21.config.tensor,
                    best_sc21.config.pipeline,
                )
                == (cfg.data, cfg.tensor, cfg.pipeline),
            }
        )
        print(f"{row['params_billion']}B done", file=sys.stderr)
    loo = []
    for i in range(len(rows)):
        cal = fit(rows[:i] + rows[i + 1 :])
        loo.append(math.exp(log_errors([rows[i]], cal)[0]))
        print(f"leave-one-out {i} done", file=sys.stderr)
    ratios = [r["ratio_predicted_to_measured"] for r in out_rows]
    print(
        json.dumps(
            {
                "benchmark": "planner",
                "anchor": "SC'21 Table 1 (Megatron-LM, A100, 1.7B-1T)",
                "calibration": vars(default),
                "rows": out_rows,
                "max_abs_error": round(max(abs(r - 1) for r in ratios), 3),
                "mean_abs_error": round(sum(abs(r - 1) for r in ratios) / len(ratios), 3),
                "all_within_15pct": all(abs(r - 1) <= 0.15 for r in ratios),
                "best_no_worse_than_published": all(
                    r["ratio_best_sc21_options_to_published"] >= 0.999 for r in out_rows
                ),
                "same_layout_count": sum(r["same_layout_as_published"] for r in out_rows),
                "leave_one_out_ratios": [round(x, 3) for x in loo],
                "leave_one_out_max_abs_error": round(max(abs(x - 1) for x in loo), 3),
                "seconds": round(time.perf_counter() - t0, 1),
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
