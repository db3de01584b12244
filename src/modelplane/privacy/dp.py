"""Differentially private training with Opacus: DP-SGD, epsilon reported each epoch, hard budget.

The budget is enforced before any step is taken: with a fixed noise multiplier and sampling rate
the accountant's epsilon depends only on the step count, so the largest number of steps that
stays within the budget is known up front and training stops there.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from modelplane.privacy.errors import BudgetExhausted, PrivacyError, require

ACCOUNTANTS = ("rdp", "prv", "gdp")
"""Opacus accountant names: Renyi DP, privacy random variables (numerical PLD), Gaussian DP."""


@dataclass(frozen=True)
class DPConfig:
    """DP-SGD settings. ``epsilon_budget`` None means report only, never stop."""

    noise_multiplier: float = 1.1
    max_grad_norm: float = 1.0
    delta: float = 1e-5
    epsilon_budget: float | None = None
    accountant: str = "prv"

    def validate(self) -> None:
        if not self.noise_multiplier > 0:
            raise PrivacyError(f"noise_multiplier must be > 0, got {self.noise_multiplier}",
                               hint="typical values are 0.5-2.0", field="noise_multiplier")
        if not self.max_grad_norm > 0:
            raise PrivacyError(f"max_grad_norm must be > 0, got {self.max_grad_norm}", field="max_grad_norm")
        if not 0 < self.delta < 1:
            raise PrivacyError(f"delta must be in (0, 1), got {self.delta}",
                               hint="use less than 1/number-of-examples, e.g. 1e-5", field="delta")
        if self.epsilon_budget is not None and not self.epsilon_budget > 0:
            raise PrivacyError(f"epsilon_budget must be > 0, got {self.epsilon_budget}", field="epsilon_budget")
        if self.accountant not in ACCOUNTANTS:
            raise PrivacyError(f"unknown accountant {self.accountant!r}", hint=f"one of {ACCOUNTANTS}",
                               field="accountant")


def epsilon_for(noise_multiplier: float, sample_rate: float, steps: int, delta: float, accountant: str = "prv") -> float:
    """Epsilon spent after ``steps`` Poisson-subsampled Gaussian steps."""
    if steps <= 0:
        return 0.0
    require("opacus")
    from opacus.accountants import create_accountant

    acc = create_accountant(mechanism=accountant)
    acc.history = [(noise_multiplier, sample_rate, steps)]
    return float(acc.get_epsilon(delta=delta))


def max_steps_within(config: DPConfig, sample_rate: float, upper: int) -> int:
    """The most steps (<= upper) whose epsilon stays within the budget, by bisection (eps grows with steps)."""
    if config.epsilon_budget is None:
        return upper

    def spent(steps: int) -> float:
        return epsilon_for(config.noise_multiplier, sample_rate, steps, config.delta, config.accountant)

    if spent(upper) <= config.epsilon_budget:
        return upper
    lo, hi = 0, upper  # spent(lo) <= budget < spent(hi)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if spent(mid) <= config.epsilon_budget:
            lo = mid
        else:
            hi = mid
    return lo


@dataclass
class EpochReport:
    epoch: int
    steps: int
    epsilon: float
    loss: float


@dataclass
class DPTrainingReport:
    epochs: list[EpochReport] = field(default_factory=list)
    stopped: str = "completed"
    """``completed`` or ``budget_exhausted``."""
    delta: float = 0.0
    max_steps: int = 0

    @property
    def epsilon(self) -> float:
        return self.epochs[-1].epsilon if self.epochs else 0.0


def train_dp(
    model: Any, optimizer: Any, data_loader: Any, loss_fn: Callable[[Any, Any], Any], *, epochs: int,
    config: DPConfig, on_epoch: Callable[[EpochReport], None] | None = None, seed: int | None = None,
) -> tuple[Any, DPTrainingReport]:
    """Train with DP-SGD; returns the (wrapped) model and a report of epsilon per epoch.

    ``on_epoch`` is where a job reports epsilon into its status.
    """
    config.validate()
    if epochs < 1:
        raise PrivacyError(f"epochs must be >= 1, got {epochs}", field="epochs")
    require("opacus")
    from opacus import PrivacyEngine

    engine = PrivacyEngine(accountant=config.accountant)
    model, optimizer, data_loader = engine.make_private(
        module=model, optimizer=optimizer, data_loader=data_loader, noise_multiplier=config.noise_multiplier,
        max_grad_norm=config.max_grad_norm, noise_generator=None if seed is None else _generator(seed),
    )
    sample_rate = 1.0 / len(data_loader)
    report = DPTrainingReport(delta=config.delta)
    report.max_steps = max_steps_within(config, sample_rate, epochs * len(data_loader))
    if report.max_steps == 0:
        raise BudgetExhausted(
            f"epsilon budget {config.epsilon_budget} does not allow a single step at noise "
            f"{config.noise_multiplier} and sampling rate {sample_rate:.4g}",
            hint="raise the budget or the noise multiplier, or use larger data", field="epsilon_budget",
        )
    steps = 0
    model.train()
    for epoch in range(epochs):
        total, batches = 0.0, 0
        for x, y in data_loader:
            if steps >= report.max_steps:
                break
            optimizer.zero_grad()
            loss = loss_fn(model(x), y)
            loss.backward()
            optimizer.step()
            steps += 1
            total += float(loss.detach())
            batches += 1
        item = EpochReport(epoch, steps, float(engine.get_epsilon(config.delta)), total / max(batches, 1))
        report.epochs.append(item)
        if on_epoch is not None:
            on_epoch(item)
        if steps >= report.max_steps and report.max_steps < epochs * len(data_loader):
            report.stopped = "budget_exhausted"
            break
    return model, report


def _generator(seed: int) -> Any:
    import torch

    g = torch.Generator()
    g.manual_seed(seed)
    return g
