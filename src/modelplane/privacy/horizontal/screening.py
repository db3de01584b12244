"""What the server checks before an update may enter the average.

Plain FedAvg/FedProx: each party's parameters are checked for shape, finiteness and how far they
moved from the global model (a bound on the update norm), and a failing party is named and left
out of that round only. Under SecAgg+ the server never sees a party's parameters, only a masked
vector of integers mod 2^k: what can be checked per party is its structure (the expected arrays,
integers inside the modulus), and the unmasked *sum* is checked like one update. A party whose
masked vector is malformed is treated exactly like a dropout: its mask is reconstructed from the
other parties' shares and the round goes on without it.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def screen_parameters(
    params: Sequence[np.ndarray], reference: Sequence[np.ndarray], max_update_norm: float
) -> str | None:
    """Why ``params`` must be rejected (compared with the global ``reference``), or None."""
    if len(params) != len(reference):
        return f"expected {len(reference)} arrays, got {len(params)}"
    sq = 0.0
    for i, (p, r) in enumerate(zip(params, reference, strict=True)):
        if p.shape != r.shape:
            return f"array {i} has shape {p.shape}, expected {r.shape}"
        if not np.issubdtype(p.dtype, np.number):
            return f"array {i} has non-numeric dtype {p.dtype}"
        if not np.all(np.isfinite(p)):
            return f"array {i} contains NaN or infinity"
        sq += float(np.sum((p.astype(np.float64) - r) ** 2))
    norm = sq**0.5
    if norm > max_update_norm:
        return f"update norm {norm:.3g} exceeds the bound {max_update_norm:g}"
    return None


def screen_masked_vector(
    arrays: Sequence[np.ndarray], shapes: Sequence[tuple[int, ...]], modulus: int
) -> str | None:
    """Why a SecAgg+ masked vector must be rejected, or None.

    ``shapes`` are the model's; SecAgg+ prepends the one-element weight factor.
    """
    expected = [(1,), *shapes]
    if len(arrays) != len(expected):
        return f"masked vector has {len(arrays)} arrays, expected {len(expected)}"
    for i, (a, shape) in enumerate(zip(arrays, expected, strict=True)):
        if tuple(a.shape) != tuple(shape):
            return f"masked array {i} has shape {tuple(a.shape)}, expected {tuple(shape)}"
        if not np.issubdtype(a.dtype, np.integer):
            return f"masked array {i} has dtype {a.dtype}, expected integers"
        if a.size and (int(a.min()) < 0 or int(a.max()) >= modulus):
            return f"masked array {i} has values outside [0, {modulus})"
    return None
