from __future__ import annotations

import pytest
import torch

from modelplane.privacy.adversarial import accuracy
from modelplane.privacy.dp import DPConfig, epsilon_for, max_steps_within, train_dp
from modelplane.privacy.errors import BudgetExhausted, PrivacyError
from tests.privacy.digits import digits_tensors, mlp


@pytest.mark.parametrize(("accountant", "expected"), [("rdp", 2.60), ("prv", 2.39)])
def test_accountant_matches_the_published_mnist_setting(accountant: str, expected: float) -> None:
    # ANCHORS: q=256/60000, sigma=1.1, 14,062 steps, delta=1e-5 -> 2.60 (RDP) / 2.38 (PLD)
    assert epsilon_for(1.1, 256 / 60000, 14062, 1e-5, accountant) == pytest.approx(expected, abs=0.015)


def test_max_steps_is_the_last_step_inside_the_budget() -> None:
    config = DPConfig(noise_multiplier=1.5, epsilon_budget=1.0, accountant="rdp")
    q = 0.01
    k = max_steps_within(config, q, 10_000)
    assert 0 < k < 10_000
    assert epsilon_for(1.5, q, k, config.delta, "rdp") <= 1.0 < epsilon_for(1.5, q, k + 1, config.delta, "rdp")


def _loader(x: torch.Tensor, y: torch.Tensor, batch: int = 64) -> torch.utils.data.DataLoader:
    return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=batch, shuffle=True)


def test_dp_sgd_reports_growing_epsilon_and_learns() -> None:
    x, y, xt, yt = digits_tensors()
    model = mlp()
    seen: list[float] = []
    model, report = train_dp(
        model, torch.optim.SGD(model.parameters(), lr=0.5), _loader(x, y), torch.nn.functional.cross_entropy,
        epochs=4, config=DPConfig(noise_multiplier=1.0, max_grad_norm=1.0, accountant="rdp"),
        on_epoch=lambda e: seen.append(e.epsilon), seed=0,
    )
    assert report.stopped == "completed" and len(report.epochs) == 4
    assert seen == [e.epsilon for e in report.epochs] and seen == sorted(seen) and seen[0] > 0
    steps = report.epochs[-1].steps
    assert report.epsilon == pytest.approx(epsilon_for(1.0, 1 / 20, steps, 1e-5, "rdp"), rel=1e-6)
    assert accuracy(model, xt, yt) > 0.8


def test_training_stops_when_the_budget_is_exhausted() -> None:
    x, y, _, _ = digits_tensors()
    model = mlp()
    config = DPConfig(noise_multiplier=1.5, epsilon_budget=2.0, accountant="rdp")  # ~120 steps = 6 epochs
    _, report = train_dp(model, torch.optim.SGD(model.parameters(), lr=0.5), _loader(x, y),
                         torch.nn.functional.cross_entropy, epochs=20, config=config)
    assert report.stopped == "budget_exhausted"
    assert 1 < len(report.epochs) < 20
    assert report.epsilon <= 2.0
    assert report.epochs[-1].steps == report.max_steps


def test_a_budget_too_small_for_one_step_is_refused() -> None:
    x, y, _, _ = digits_tensors()
    model = mlp()
    with pytest.raises(BudgetExhausted, match="does not allow a single step"):
        train_dp(model, torch.optim.SGD(model.parameters(), lr=0.1), _loader(x, y), torch.nn.functional.cross_entropy,
                 epochs=1, config=DPConfig(noise_multiplier=0.3, epsilon_budget=1e-3, accountant="rdp"))


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [({"noise_multiplier": 0}, "noise_multiplier"), ({"delta": 1.5}, "delta"), ({"epsilon_budget": -1}, "epsilon_budget"),
     ({"accountant": "moments"}, "accountant"), ({"max_grad_norm": 0}, "max_grad_norm")],
)
def test_bad_settings_name_the_field(kwargs: dict[str, object], field: str) -> None:
    with pytest.raises(PrivacyError) as err:
        DPConfig(**kwargs).validate()  # type: ignore[arg-type]
    assert err.value.field == field
