"""scikit-learn's digits split non-IID across parties, one shard file per party.

Why a Dirichlet split: label skew is what makes federated averaging hard (each party sees a few
classes mostly), and Dirichlet(alpha) is how the FL literature (and Flower's datasets) make it.
The split is deterministic in ``seed``, so each party can materialize its own shard from the pip
package without seeing the others'.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from modelplane.privacy.errors import PrivacyError

FEATURES = 64
CLASSES = 10


def digits_split(
    seed: int = 0, test_size: float = 0.3
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(x_train, y_train, x_test, y_test), features scaled to [0, 1], stratified split."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    data = load_digits()
    x_tr, x_te, y_tr, y_te = train_test_split(
        data.data / 16.0, data.target, test_size=test_size, random_state=seed, stratify=data.target
    )
    return (x_tr.astype(np.float64), y_tr.astype(np.int64), x_te.astype(np.float64), y_te.astype(np.int64))


def dirichlet_partition(
    labels: np.ndarray, parties: int, alpha: float, seed: int = 0, min_size: int = 20
) -> list[np.ndarray]:
    """Indices per party; class c is spread over parties by proportions ~ Dirichlet(alpha).

    Redraws until every party has ``min_size`` rows, so that no party trains on nearly nothing.
    """
    if parties < 1:
        raise PrivacyError(f"parties must be >= 1, got {parties}")
    if alpha <= 0:
        raise PrivacyError(f"alpha must be > 0, got {alpha}")
    rng = np.random.default_rng(seed)
    for _ in range(1000):
        buckets: list[list[int]] = [[] for _ in range(parties)]
        for c in np.unique(labels):
            idx = np.flatnonzero(labels == c)
            rng.shuffle(idx)
            cuts = (np.cumsum(rng.dirichlet([alpha] * parties)) * len(idx)).astype(int)[:-1]
            for p, part in enumerate(np.split(idx, cuts)):
                buckets[p].extend(part.tolist())
        if min(len(b) for b in buckets) >= min_size:
            return [np.sort(np.asarray(b, dtype=np.int64)) for b in buckets]
    raise PrivacyError(
        f"cannot give each of {parties} parties {min_size} rows at alpha={alpha}",
        hint="use fewer parties or a larger alpha",
    )


def write_shard(path: Path, x: np.ndarray, y: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as fh:
        np.savez(fh, x=x, y=y)
    return path


def read_shard(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """A party's shard, checked: the error names the file and what is wrong with it."""
    p = Path(path)
    if not p.is_file():
        raise PrivacyError(
            f"shard {p} does not exist", hint="write it with python -m modelplane.privacy.horizontal.data"
        )
    try:
        with np.load(p) as z:
            x, y = np.asarray(z["x"], dtype=np.float64), np.asarray(z["y"], dtype=np.int64)
    except (OSError, KeyError, ValueError) as exc:
        raise PrivacyError(f"shard {p} is not an .npz with arrays x and y: {exc}") from None
    if x.ndim != 2 or x.shape[1] != FEATURES or y.shape != (x.shape[0],):
        raise PrivacyError(f"shard {p}: expected x (n, {FEATURES}) and y (n,), got {x.shape} and {y.shape}")
    if y.size and (y.min() < 0 or y.max() >= CLASSES):
        raise PrivacyError(f"shard {p}: labels must be in 0..{CLASSES - 1}")
    return x, y


def write_digits_shards(
    out: Path, parties: int, alpha: float = 0.5, seed: int = 0, only: int | None = None
) -> dict[str, Path]:
    """Write ``party-<i>.npz`` (or only party ``only``) and the server's ``test.npz``."""
    x_tr, y_tr, x_te, y_te = digits_split(seed)
    parts = dirichlet_partition(y_tr, parties, alpha, seed)
    paths: dict[str, Path] = {}
    for i, idx in enumerate(parts):
        if only is None or only == i:
            paths[f"party-{i}"] = write_shard(out / f"party-{i}.npz", x_tr[idx], y_tr[idx])
    if only is None:
        paths["test"] = write_shard(out / "test.npz", x_te, y_te)
    return paths


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="write the digits shards of a non-IID split")
    ap.add_argument("--parties", type=int, required=True)
    ap.add_argument("--alpha", type=float, default=0.5, help="Dirichlet concentration (smaller = more skew)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--only", type=int, default=None, help="write only this party's shard (0-based)")
    ap.add_argument("--test", action="store_true", help="with --only: write only the server's test.npz")
    ap.add_argument("--out", type=Path, required=True)
    a = ap.parse_args(argv)
    try:
        if a.test:
            _, _, x_te, y_te = digits_split(a.seed)
            write_shard(a.out / "test.npz", x_te, y_te)
        else:
            write_digits_shards(a.out, a.parties, a.alpha, a.seed, a.only)
    except PrivacyError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
