"""Party data files: CSV with an ``id`` column, feature columns and (guest only) a ``label`` column."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from modelplane.core.errors import InvalidSpec


@dataclass
class PartyData:
    ids: list[str]
    features: np.ndarray
    labels: np.ndarray | None
    feature_names: list[str]

    def rows(self, ids: list[str]) -> PartyData:
        index = {i: k for k, i in enumerate(self.ids)}
        take = [index[i] for i in ids]
        return PartyData(
            list(ids), self.features[take], None if self.labels is None else self.labels[take], self.feature_names
        )


def read_party_csv(path: Path, *, label_column: str | None = None) -> PartyData:
    """Read a party's CSV; a missing id/label column or a non-numeric cell is a clear error."""
    try:
        with open(path, newline="") as f:
            reader = csv.reader(f)
            header = next(reader)
            body = list(reader)
    except FileNotFoundError as exc:
        raise InvalidSpec(f"party data file {path} does not exist", hint="pass --data PATH", field="data") from exc
    if not header or header[0] != "id":
        raise InvalidSpec(f"{path}: first column must be 'id', got {header[:1]}", field="data")
    label_at = None
    if label_column is not None:
        if label_column not in header:
            raise InvalidSpec(f"{path}: no {label_column!r} column", hint="the guest holds the labels", field="data")
        label_at = header.index(label_column)
    feature_at = [k for k in range(1, len(header)) if k != label_at]
    try:
        matrix = np.array([[float(r[k]) for k in feature_at] for r in body], dtype=float)
        labels = None if label_at is None else np.array([float(r[label_at]) for r in body])
    except (ValueError, IndexError) as exc:
        raise InvalidSpec(f"{path}: non-numeric or missing cell ({exc})", field="data") from exc
    if labels is not None and not set(np.unique(labels)) <= {0.0, 1.0}:
        raise InvalidSpec(f"{path}: labels must be 0 or 1", field="data")
    ids = [r[0] for r in body]
    if len(set(ids)) != len(ids):
        raise InvalidSpec(f"{path}: duplicate ids", field="data")
    return PartyData(ids, matrix.reshape(len(body), len(feature_at)), labels, [header[k] for k in feature_at])


def write_breast_cancer_split(directory: Path, *, host_only: int = 20, guest_only: int = 20, seed: int = 0) -> tuple[Path, Path]:
    """FATE's split of scikit-learn's breast cancer set, z-scored: host features 0-19, guest 20-29 + label.

    ``host_only``/``guest_only`` rows are given to one party only (and fresh fake IDs to the other)
    so that sample alignment has something to do.
    """
    try:
        from sklearn.datasets import load_breast_cancer
    except ImportError as exc:
        raise InvalidSpec("scikit-learn is needed for the demo dataset", hint="pip install scikit-learn") from exc
    data = load_breast_cancer()
    x = (data.data - data.data.mean(axis=0)) / data.data.std(axis=0)
    y = data.target
    ids = [f"id{k:05d}" for k in range(len(y))]
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(y))
    host_rows = sorted(set(range(len(y))) - set(order[:guest_only].tolist()))
    guest_rows = sorted(set(range(len(y))) - set(order[guest_only : guest_only + host_only].tolist()))
    directory.mkdir(parents=True, exist_ok=True)
    host_path, guest_path = directory / "host.csv", directory / "guest.csv"
    with open(host_path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", *[f"x{k}" for k in range(20)]])
        for r in host_rows:
            w.writerow([ids[r], *[f"{v:.8f}" for v in x[r, :20]]])
        for k in range(5):  # IDs the guest never had
            w.writerow([f"hostonly{k}", *["0"] * 20])
    with open(guest_path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", *[f"x{k}" for k in range(20, 30)], "label"])
        for r in guest_rows:
            w.writerow([ids[r], *[f"{v:.8f}" for v in x[r, 20:]], int(y[r])])
    return host_path, guest_path


def main(argv: list[str] | None = None) -> int:
    """``python -m modelplane.privacy.vertical.data --out DIR [--only host|guest]``: write the demo split.

    ``--only`` keeps the other party's file out of this party's directory, as in a real federation.
    """
    import argparse
    import sys

    ap = argparse.ArgumentParser(prog="python -m modelplane.privacy.vertical.data")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--only", choices=["host", "guest"], default=None)
    a = ap.parse_args(argv)
    try:
        host, guest = write_breast_cancer_split(a.out)
    except InvalidSpec as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if a.only == "host":
        guest.unlink()
    elif a.only == "guest":
        host.unlink()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
