"""Capture and restore every random generator a training step draws from, so a resumed run draws
the same dropout masks and shuffles as one that never stopped."""

from __future__ import annotations

import random
import sys
from typing import Any


def capture() -> dict[str, Any]:
    import torch

    state: dict[str, Any] = {"python": random.getstate(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available() and getattr(torch.cuda, "is_initialized")():  # noqa: B009
        state["cuda"] = torch.cuda.get_rng_state_all()
    if "numpy" in sys.modules:
        state["numpy"] = sys.modules["numpy"].random.get_state()
    return state


def restore(state: dict[str, Any]) -> None:
    import torch

    random.setstate(state["python"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    if "numpy" in state:
        import numpy

        numpy.random.set_state(state["numpy"])


def reseed(seed: int, rank: int) -> None:
    """Fresh, distinct streams for a rank that has no saved state (the job grew on resume)."""
    import torch

    s = (seed * 1_000_003 + rank) % (2**63)
    random.seed(s)
    torch.manual_seed(s)
    if "numpy" in sys.modules:
        sys.modules["numpy"].random.seed(s % (2**32))
