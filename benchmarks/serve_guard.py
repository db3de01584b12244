"""Input filter vs the regex-only baseline on held-out CyberSecEval and on benign trigger-word prompts.

Held-out split: 25% of groups (CyberSecEval prompt ids, which keep an English case and its
translations together; each hand-written benign prompt; each benign template frame), never seen
in training. Prints one JSON object; progress goes to stderr.

    PYTHONPATH=src .venv/bin/python benchmarks/serve_guard.py [--retrain]
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np

from modelplane.serve.guards.benign import has_trigger_word
from modelplane.serve.guards.injection import (
    InjectionClassifier,
    InjectionFilter,
    all_samples,
    is_test_group,
)

DATA = "../shared/data/datasets/cyberseceval-prompt-injection"


def confusion(pred: np.ndarray, y: np.ndarray) -> dict[str, float]:
    tp = int(np.sum(pred & (y == 1)))
    fp = int(np.sum(pred & (y == 0)))
    fn = int(np.sum(~pred & (y == 1)))
    tn = int(np.sum(~pred & (y == 0)))
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": round(precision, 4), "recall": round(recall, 4), "f1": round(f1, 4),
            "false_positive_rate": round(fp / (fp + tn), 4) if fp + tn else 0.0, "tp": tp, "fp": fp, "fn": fn, "tn": tn}


def recall_at_fpr(scores: np.ndarray, y: np.ndarray, fpr: float) -> float:
    from sklearn.metrics import roc_curve

    f, t, _ = roc_curve(y, scores)
    ok = t[f <= fpr]
    return float(ok.max()) if ok.size else 0.0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--retrain", action="store_true", help="train the classifier from the training split first")
    a = ap.parse_args()
    samples = all_samples(DATA)
    train = [s for s in samples if not is_test_group(s.group)]
    test = [s for s in samples if is_test_group(s.group)]
    if a.retrain:
        print(f"training on {len(train)} samples", file=sys.stderr)
        clf = InjectionClassifier.train(train)
    else:
        clf = InjectionClassifier.load()
    texts = [s.text for s in test]
    y = np.array([s.label for s in test])
    filters = {m: InjectionFilter(clf, mode=m) for m in ("regex", "classifier", "combined")}
    preds: dict[str, np.ndarray] = {}
    lat: dict[str, list[float]] = {}
    scores = np.zeros(len(texts))
    for m, f in filters.items():
        out, times = [], []
        for i, t in enumerate(texts):
            t0 = time.perf_counter()
            d = f.check(t)
            times.append(time.perf_counter() - t0)
            out.append(d.action.value == "block")
            if m == "classifier":
                scores[i] = d.score
        preds[m] = np.array(out)
        lat[m] = times
        print(f"{m}: done", file=sys.stderr)
    from sklearn.metrics import roc_auc_score

    trig = np.array([s.label == 0 and has_trigger_word(s.text) for s in test])
    english_attack = np.array([s.label == 1 and s.text.isascii() for s in test])
    result: dict[str, object] = {
        "benchmark": "serve_guard",
        "split": {"train_samples": len(train), "test_samples": len(test), "test_attacks": int(y.sum()),
                  "test_benign": int((y == 0).sum()), "test_benign_with_trigger_words": int(trig.sum())},
        "threshold": round(clf.threshold, 4),
        "classifier_auc": round(float(roc_auc_score(y, scores)), 4),
        "classifier_recall_at_1pct_fpr": round(recall_at_fpr(scores, y, 0.01), 4),
    }
    for m in filters:
        p = preds[m]
        result[m] = {
            "held_out": confusion(p, y),
            "fpr_on_benign_trigger_word_prompts": round(float(p[trig].mean()), 4) if trig.any() else None,
            "recall_on_ascii_attacks": round(float(p[english_attack].mean()), 4) if english_attack.any() else None,
            "p50_ms": round(float(np.percentile(lat[m], 50)) * 1e3, 3),
            "p99_ms": round(float(np.percentile(lat[m], 99)) * 1e3, 3),
        }
    r, c = result["regex"]["held_out"], result["combined"]["held_out"]  # type: ignore[index]
    result["combined_vs_regex"] = {
        "recall_ratio": round(c["recall"] / r["recall"], 3) if r["recall"] else None,
        "f1_ratio": round(c["f1"] / r["f1"], 3) if r["f1"] else None,
    }
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
