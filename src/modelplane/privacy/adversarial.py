"""FGSM and PGD attacks and adversarial training (Madry et al.) for torch classifiers.

Attacks are chosen by name from ``ATTACKS``; inputs are assumed scaled to [lo, hi] (default [0, 1]).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from modelplane.privacy.errors import PrivacyError, require


@dataclass(frozen=True)
class AttackConfig:
    name: str = "pgd"
    epsilon: float = 0.1
    """L-infinity radius."""
    step_size: float = 0.025
    steps: int = 7
    lo: float = 0.0
    hi: float = 1.0

    def validate(self) -> None:
        if self.name not in ATTACKS:
            raise PrivacyError(f"unknown attack {self.name!r}", hint=f"one of {sorted(ATTACKS)}", field="attack")
        if not self.epsilon > 0 or not self.step_size > 0 or self.steps < 1:
            raise PrivacyError("attack epsilon and step_size must be > 0 and steps >= 1", field="attack")


def _loss_grad(model: Any, x: Any, y: Any) -> Any:
    torch: Any = require("torch", "train")
    x = x.clone().detach().requires_grad_(True)
    loss = torch.nn.functional.cross_entropy(model(x), y)
    (grad,) = torch.autograd.grad(loss, x)
    return grad


def fgsm(model: Any, x: Any, y: Any, config: AttackConfig) -> Any:
    """One signed-gradient step of size epsilon (Goodfellow et al.)."""
    return (x + config.epsilon * _loss_grad(model, x, y).sign()).clamp(config.lo, config.hi).detach()


def pgd(model: Any, x: Any, y: Any, config: AttackConfig) -> Any:
    """Projected gradient descent from a random start inside the epsilon ball."""
    torch: Any = require("torch", "train")
    adv = (x + torch.empty_like(x).uniform_(-config.epsilon, config.epsilon)).clamp(config.lo, config.hi)
    for _ in range(config.steps):
        adv = adv + config.step_size * _loss_grad(model, adv, y).sign()
        adv = torch.min(torch.max(adv, x - config.epsilon), x + config.epsilon).clamp(config.lo, config.hi).detach()
    return adv


ATTACKS: dict[str, Callable[[Any, Any, Any, AttackConfig], Any]] = {"fgsm": fgsm, "pgd": pgd}


def attack(model: Any, x: Any, y: Any, config: AttackConfig) -> Any:
    """``x`` perturbed by ``config``'s attack, computed in eval mode.

    An Opacus ``GradSampleModule`` (a DP-SGD model) has its per-example hooks switched off
    meanwhile: the attack's input gradients are not a training step, and in eval mode its backward
    hook would find no stored activations and fail."""
    config.validate()
    was_training = model.training
    hooks = getattr(model, "hooks_enabled", False) and hasattr(model, "disable_hooks")
    if hooks:
        model.disable_hooks()
    model.eval()
    try:
        return ATTACKS[config.name](model, x, y, config)
    finally:
        model.train(was_training)
        if hooks:
            model.enable_hooks()


def adversarial_train_epoch(model: Any, optimizer: Any, data_loader: Any, config: AttackConfig,
                            clean_weight: float = 0.5) -> float:
    """One epoch on a mix of clean and attacked batches; returns the mean loss."""
    torch: Any = require("torch", "train")
    if not 0 <= clean_weight <= 1:
        raise PrivacyError(f"clean_weight must be in [0, 1], got {clean_weight}", field="clean_weight")
    model.train()
    total, n = 0.0, 0
    for x, y in data_loader:
        adv = attack(model, x, y, config)
        optimizer.zero_grad()
        f = torch.nn.functional.cross_entropy
        loss = clean_weight * f(model(x), y) + (1 - clean_weight) * f(model(adv), y)
        loss.backward()
        optimizer.step()
        total += float(loss.detach())
        n += 1
    return total / max(n, 1)


def accuracy(model: Any, x: Any, y: Any, config: AttackConfig | None = None) -> float:
    """Clean accuracy, or robust accuracy under ``config``'s attack."""
    torch: Any = require("torch", "train")
    inputs = x if config is None else attack(model, x, y, config)
    model.eval()
    with torch.no_grad():
        return float((model(inputs).argmax(dim=1) == y).float().mean())
