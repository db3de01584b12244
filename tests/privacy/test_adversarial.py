from __future__ import annotations

import pytest
import torch

from modelplane.privacy.adversarial import AttackConfig, accuracy, adversarial_train_epoch, attack
from modelplane.privacy.errors import PrivacyError
from tests.privacy.digits import digits_tensors, mlp

ATTACK = AttackConfig(name="pgd", epsilon=0.1, step_size=0.025, steps=7)


def _train(adversarial: bool, epochs: int = 15) -> torch.nn.Module:
    x, y, _, _ = digits_tensors()
    model = mlp(seed=1)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    torch.manual_seed(0)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=64, shuffle=True)
    for _ in range(epochs):
        if adversarial:
            adversarial_train_epoch(model, opt, loader, AttackConfig(name="fgsm", epsilon=0.12))
        else:
            for xb, yb in loader:
                opt.zero_grad()
                torch.nn.functional.cross_entropy(model(xb), yb).backward()
                opt.step()
    return model


@pytest.fixture(scope="module")
def models() -> tuple[torch.nn.Module, torch.nn.Module]:
    return _train(False), _train(True)


def test_attacks_stay_in_the_ball_and_hurt_a_standard_model(models) -> None:
    plain, _ = models
    _, _, xt, yt = digits_tensors()
    for name in ("fgsm", "pgd"):
        config = AttackConfig(name=name, epsilon=0.1)
        adv = attack(plain, xt, yt, config)
        assert float((adv - xt).abs().max()) <= 0.1 + 1e-6
        assert float(adv.min()) >= 0 and float(adv.max()) <= 1
        assert accuracy(plain, xt, yt, config) < accuracy(plain, xt, yt) - 0.2


def test_adversarial_training_improves_robust_accuracy(models) -> None:
    plain, robust = models
    _, _, xt, yt = digits_tensors()
    torch.manual_seed(0)
    plain_robust = accuracy(plain, xt, yt, ATTACK)
    torch.manual_seed(0)
    trained_robust = accuracy(robust, xt, yt, ATTACK)
    assert trained_robust > plain_robust + 0.15, (plain_robust, trained_robust)
    assert accuracy(robust, xt, yt) > 0.85  # clean accuracy stays useful


def test_unknown_attack_is_a_clear_error() -> None:
    with pytest.raises(PrivacyError, match="unknown attack"):
        AttackConfig(name="cw").validate()
