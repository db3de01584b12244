"""modelplane.train.make_private: the privacy seam of the training loop, with real Opacus DP-SGD,
real PGD/FGSM, and heartbeat records that the control plane turns into job events."""

from __future__ import annotations

import json
from typing import Any

import pytest
import torch
from torch import nn

from modelplane.core.errors import InvalidSpec
from modelplane.core.spec import PRIVACY_SPEC_ENV, PrivacySpec
from modelplane.train import CallbackHeartbeat, PrivacyBudgetExhausted, make_private
from modelplane.train.privacy_hooks import privacy_spec_from_env

N, FEATURES, CLASSES, BATCH = 1024, 16, 4, 32


def setup(seed: int = 0) -> tuple[nn.Module, torch.optim.Optimizer, torch.utils.data.DataLoader]:
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(N, FEATURES, generator=g)
    y = (x[:, :CLASSES]).argmax(dim=1)
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(FEATURES, 16), nn.ReLU(), nn.Linear(16, CLASSES))
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=BATCH, shuffle=True)
    return model, torch.optim.SGD(model.parameters(), lr=0.3), loader


def spec(**dp: Any) -> PrivacySpec:
    body: dict[str, Any] = {"targetEpsilon": 3.0, "delta": 1e-5, "maxGradNorm": 1.0} | dp
    return PrivacySpec.model_validate({"differentialPrivacy": body})


def run(priv: Any, total: int) -> list[int]:
    seen = []
    for epoch in priv.epochs(total):
        seen.append(epoch)
        for x, y in priv.data_loader:
            priv.optimizer.zero_grad()
            priv.loss(x, y).backward()
            priv.optimizer.step()
        priv.end_epoch()
    return seen


def test_without_a_privacy_block_every_hook_is_a_no_op() -> None:
    model, opt, loader = setup()
    beats: list[dict[str, Any]] = []
    priv = make_private(model, opt, loader, heartbeat=CallbackHeartbeat(beats.append), env={})
    assert priv.model is model and priv.optimizer is opt and priv.data_loader is loader and not priv.enabled
    assert run(priv, 3) == [0, 1, 2]
    assert priv.epsilon() is None and not priv.exhausted
    assert "epsilon" not in beats[-1]["privacy"] and beats[-1]["privacy"]["epoch"] == 3
    x, y = next(iter(loader))
    assert torch.equal(priv.perturb(x, y), x)


def test_the_spec_comes_from_the_environment_the_controller_sets() -> None:
    s = spec(epochs=2)
    env = {PRIVACY_SPEC_ENV: s.model_dump_json(by_alias=True, exclude_none=True)}
    assert privacy_spec_from_env(env) == s
    assert privacy_spec_from_env({PRIVACY_SPEC_ENV: " "}) is None
    with pytest.raises(InvalidSpec, match="not JSON"):
        privacy_spec_from_env({PRIVACY_SPEC_ENV: "{nope"})
    with pytest.raises(InvalidSpec, match="delta must be in"):
        privacy_spec_from_env({PRIVACY_SPEC_ENV: json.dumps({"differentialPrivacy": {
            "targetEpsilon": 1, "delta": 2, "epochs": 1}})})


def test_epsilon_is_reported_each_epoch_and_training_stops_before_the_budget_is_exceeded() -> None:
    model, opt, loader = setup()
    beats: list[dict[str, Any]] = []
    priv = make_private(model, opt, loader, heartbeat=CallbackHeartbeat(beats.append),
                        spec=spec(noiseMultiplier=1.0, targetEpsilon=2.0), seed=0)
    assert priv.enabled and priv.noise_multiplier == 1.0
    seen = run(priv, 50)
    assert 1 <= len(seen) < 50 and priv.exhausted  # the budget, not the schedule, ended training
    eps = [e["epsilon"] for e in priv.log]
    assert eps == sorted(eps) and eps[-1] <= 2.0 < priv.log[-1]["next_epsilon"]
    assert priv.steps == len(seen) * priv.steps_per_epoch
    record = beats[-1]["privacy"]
    assert record["exhausted"] and record["targetEpsilon"] == 2.0 and record["delta"] == 1e-5
    assert [h["epoch"] for h in record["history"]] == list(range(1, len(seen) + 1))
    assert record["epsilon"] == pytest.approx(eps[-1])
    with pytest.raises(PrivacyBudgetExhausted, match="one more epoch would reach"):
        priv.check()


def test_calibrated_noise_spends_at_most_the_target_over_the_planned_epochs() -> None:
    model, opt, loader = setup()
    priv = make_private(model, opt, loader, spec=spec(epochs=3, targetEpsilon=2.5, accountant="rdp"), seed=0)
    assert run(priv, 3) == [0, 1, 2]
    assert not priv.exhausted  # the last planned epoch is not an early stop
    final = priv.log[-1]["epsilon"]
    assert 0.8 * 2.5 <= final <= 2.5
    priv.check()  # nothing to raise


def test_a_budget_too_small_for_one_epoch_is_refused_up_front() -> None:
    model, opt, loader = setup()
    with pytest.raises(PrivacyBudgetExhausted, match="does not allow a single epoch"):
        make_private(model, opt, loader, spec=spec(noiseMultiplier=0.5, targetEpsilon=0.05))


def test_resume_restores_what_was_spent_and_the_epoch_to_continue_from() -> None:
    model, opt, loader = setup()
    priv = make_private(model, opt, loader, spec=spec(noiseMultiplier=1.0, targetEpsilon=8.0, accountant="rdp"), seed=0)
    run(priv, 2)
    state = json.loads(json.dumps(priv.state_dict()))  # what a checkpoint keeps survives serialisation
    model2, opt2, loader2 = setup()
    again = make_private(model2, opt2, loader2, spec=spec(noiseMultiplier=1.0, targetEpsilon=8.0, accountant="rdp"), seed=0)
    assert again.epsilon() == 0.0
    again.load_state_dict(state)
    assert again.epsilon() == pytest.approx(priv.epsilon())
    assert run(again, 3) == [2]  # only the third epoch is left
    assert again.log[-1]["epoch"] == 3 and again.log[-1]["epsilon"] > priv.log[-1]["epsilon"]


def test_checkpointables_are_the_unwrapped_model_and_optimizer() -> None:
    model, opt, loader = setup()
    priv = make_private(model, opt, loader, spec=spec(epochs=1))
    items = priv.checkpointables()
    assert items["model"] is model and items["optimizer"] is opt and items["privacy"] is priv
    assert priv.model is not model and set(priv.model.state_dict()) != set(model.state_dict())


def test_adversarial_loss_under_dp_keeps_one_clipped_gradient_per_example() -> None:
    """Clean and attacked terms share one backward pass: Opacus must see B per-example gradients
    (each the sum of the example's two terms), not 2B, or clipping would bound the wrong thing."""
    model, opt, loader = setup()
    s = PrivacySpec.model_validate({
        "differentialPrivacy": {"targetEpsilon": 5.0, "delta": 1e-5, "noiseMultiplier": 1.0},
        "adversarial": {"method": "pgd", "epsilon": 0.1, "steps": 2, "ratio": 0.5}})
    priv = make_private(model, opt, loader, spec=s, seed=0)
    x, y = next(iter(priv.data_loader))
    torch.manual_seed(1)
    adv = priv.perturb(x, y)
    torch.manual_seed(1)
    priv.optimizer.zero_grad()
    priv.loss(x, y).backward()
    weight = model[0].weight
    assert isinstance(weight.grad_sample, torch.Tensor) and weight.grad_sample.shape[0] == len(x)
    # per-example gradient of 0.5 * CE(clean) + 0.5 * CE(attacked), by plain autograd
    ref = torch.nn.functional.cross_entropy
    priv.model.disable_hooks()  # the reference must not add per-example gradients of its own
    for i in (0, len(x) - 1):
        loss_i = 0.5 * ref(model(x[i:i + 1]), y[i:i + 1]) + 0.5 * ref(model(adv[i:i + 1]), y[i:i + 1])
        (g,) = torch.autograd.grad(loss_i, weight)
        assert torch.allclose(weight.grad_sample[i], g, atol=1e-5)
    priv.model.enable_hooks()
    priv.optimizer.step()  # clipping and noise accept it


@pytest.mark.parametrize("method", ["fgsm", "pgd"])
def test_attacks_stay_in_the_ball_and_the_input_range_and_raise_the_loss(method: str) -> None:
    model, opt, loader = setup()
    body: dict[str, Any] = {"method": method, "epsilon": 0.2, "ratio": 1.0}
    priv = make_private(model, opt, loader, spec=PrivacySpec.model_validate({"adversarial": body}), env={})
    assert priv.model is model and not priv.enabled  # adversarial alone needs no Opacus wrapping
    x, y = loader.dataset.tensors
    adv = priv.perturb(x, y)
    assert (adv - x).abs().max() <= 0.2 + 1e-6 and adv.min() >= 0 and adv.max() <= 1
    f = torch.nn.functional.cross_entropy
    with torch.no_grad():
        assert f(model(adv), y) > f(model(x), y)
    assert torch.allclose(priv.loss(x, y), f(model(priv.perturb(x, y)), y), atol=0.05)  # ratio 1: attacked only
