"""scikit-learn's digits, scaled to [0, 1], as torch tensors with a fixed split."""

from __future__ import annotations

from typing import Any


def digits_tensors(seed: int = 0) -> tuple[Any, Any, Any, Any]:
    import torch
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    data = load_digits()
    x_train, x_test, y_train, y_test = train_test_split(
        data.data / 16.0, data.target, test_size=0.3, random_state=seed, stratify=data.target
    )
    return (torch.tensor(x_train, dtype=torch.float32), torch.tensor(y_train), torch.tensor(x_test, dtype=torch.float32),
            torch.tensor(y_test))


def mlp(seed: int = 0) -> Any:
    import torch

    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.ReLU(), torch.nn.Linear(64, 10))
