"""Multinomial logistic regression in numpy: the model every party trains locally.

Small on purpose: the point is the federation (secure aggregation, dropouts, skew), and a convex
model makes "within a point of centralized" a fair comparison rather than a tuning contest.
Parameters are the list ``[W (64, 10), b (10,)]``, the NDArrays Flower exchanges.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from modelplane.privacy.horizontal.data import CLASSES, FEATURES

Params = list[np.ndarray]


@dataclass(frozen=True)
class LocalConfig:
    epochs: int = 2
    learning_rate: float = 0.5
    batch_size: int = 32
    l2: float = 1e-4
    proximal_mu: float = 0.0  # FedProx: (mu / 2) * ||w - w_global||^2 added to the local loss


def zeros() -> Params:
    return [np.zeros((FEATURES, CLASSES)), np.zeros(CLASSES)]


def shapes() -> list[tuple[int, ...]]:
    return [(FEATURES, CLASSES), (CLASSES,)]


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return np.asarray(e / e.sum(axis=1, keepdims=True))


def predict(params: Params, x: np.ndarray) -> np.ndarray:
    return np.asarray(np.argmax(x @ params[0] + params[1], axis=1))


def evaluate(params: Params, x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """(cross-entropy loss, accuracy)."""
    if len(y) == 0:
        return 0.0, 0.0
    p = _softmax(x @ params[0] + params[1])
    loss = float(-np.mean(np.log(p[np.arange(len(y)), y] + 1e-12)))
    return loss, float(np.mean(np.argmax(p, axis=1) == y))


def train_local(params: Params, x: np.ndarray, y: np.ndarray, cfg: LocalConfig, seed: int = 0) -> Params:
    """Minibatch SGD from ``params``; FedProx's proximal term pulls towards the starting point."""
    w, b = params[0].astype(np.float64).copy(), params[1].astype(np.float64).copy()
    w0, b0 = w.copy(), b.copy()
    onehot = np.eye(CLASSES)[y]
    rng = np.random.default_rng(seed)
    for _ in range(cfg.epochs):
        order = rng.permutation(len(y))
        for start in range(0, len(y), cfg.batch_size):
            idx = order[start : start + cfg.batch_size]
            xb, tb = x[idx], onehot[idx]
            d = (_softmax(xb @ w + b) - tb) / len(idx)
            gw = xb.T @ d + cfg.l2 * w + cfg.proximal_mu * (w - w0)
            gb = d.sum(axis=0) + cfg.proximal_mu * (b - b0)
            w -= cfg.learning_rate * gw
            b -= cfg.learning_rate * gb
    return [w, b]


def train_centralized(x: np.ndarray, y: np.ndarray, cfg: LocalConfig, seed: int = 0) -> Params:
    """The baseline: the same model and optimizer on the union of the parties' data."""
    return train_local(zeros(), x, y, cfg, seed)
