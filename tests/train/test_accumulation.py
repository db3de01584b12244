"""Single-process fault-tolerant accumulation: dropped micro-batches leave no trace in the update."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from modelplane.train.accumulation import FaultTolerantAccumulator


def _batches(k: int = 4) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(0)
    return [(torch.randn(3, 4, generator=g), torch.randn(3, 2, generator=g)) for _ in range(k)]


def _model() -> nn.Module:
    torch.manual_seed(3)
    return nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 2))


def _expected(batches: list, keep: list[int]) -> list[torch.Tensor]:
    model = _model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    opt.zero_grad()
    for i in keep:
        x, y = batches[i]
        (nn.functional.mse_loss(model(x), y) / len(keep)).backward()
    opt.step()
    return [p.detach() for p in model.parameters()]


class Faults:
    """Which micro-batches fail, and how; ``once`` faults succeed on retry."""

    def __init__(self, model: nn.Module, faults: dict[int, str], once: bool = False) -> None:
        self.model, self.faults, self.once, self.calls = model, dict(faults), once, 0

    def __call__(self, batch: tuple[int, tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
        i, (x, y) = batch
        kind = self.faults.get(i, "")
        if self.once and kind:
            del self.faults[i]
        out = self.model(x)
        if kind == "nan_loss":
            return nn.functional.mse_loss(out, y) * float("nan")
        if kind == "raise":
            raise RuntimeError("CUDA out of memory (simulated)")
        if kind == "inf_grad":
            out.register_hook(lambda g: g * float("inf"))
        if kind == "raise_mid_backward":
            # the last layer's gradients are already written when the first layer's hook raises
            hidden = self.model[0](x)
            hidden.register_hook(lambda g: (_ for _ in ()).throw(RuntimeError("fault in backward")))
            out = self.model[2](self.model[1](hidden))
        return nn.functional.mse_loss(out, y)


@pytest.mark.parametrize("kind", ["nan_loss", "raise", "inf_grad", "raise_mid_backward"])
def test_failed_microbatch_is_dropped_and_mean_rescaled(kind: str) -> None:
    batches = _batches()
    model = _model()
    acc = FaultTolerantAccumulator(model, torch.optim.SGD(model.parameters(), lr=0.1))
    outcome = acc.step(list(enumerate(batches)), Faults(model, {1: kind}))
    assert outcome.stepped and outcome.mask == [[True, False, True, True]]
    assert acc.stats.dropped == 1 and acc.stats.steps == 1
    for got, want in zip(model.parameters(), _expected(batches, [0, 2, 3]), strict=True):
        torch.testing.assert_close(got.detach(), want)


def test_retry_recovers_a_transient_fault() -> None:
    batches = _batches()
    model = _model()
    acc = FaultTolerantAccumulator(model, torch.optim.SGD(model.parameters(), lr=0.1), max_retries=1)
    outcome = acc.step(list(enumerate(batches)), Faults(model, {2: "raise"}, once=True))
    assert outcome.mask == [[True] * 4] and acc.stats.retried == 1 and acc.stats.dropped == 0
    for got, want in zip(model.parameters(), _expected(batches, [0, 1, 2, 3]), strict=True):
        torch.testing.assert_close(got.detach(), want)


def test_all_failed_skips_the_step() -> None:
    batches = _batches(2)
    model = _model()
    before = [p.detach().clone() for p in model.parameters()]
    opt = torch.optim.Adam(model.parameters())
    acc = FaultTolerantAccumulator(model, opt)
    outcome = acc.step(list(enumerate(batches)), Faults(model, {0: "raise", 1: "nan_loss"}))
    assert not outcome.stepped and outcome.survivors == 0
    assert acc.stats.skipped_steps == 1 and acc.stats.steps == 0
    assert not opt.state  # the optimizer never stepped
    for a, b in zip(before, model.parameters(), strict=True):
        assert torch.equal(a, b)
    assert all(p.grad is None for p in model.parameters())


def test_grad_hook_sees_each_surviving_microbatch() -> None:
    seen: list[int] = []
    model = _model()
    acc = FaultTolerantAccumulator(
        model, torch.optim.SGD(model.parameters(), lr=0.1), grad_hook=lambda gs: seen.append(len(gs))
    )
    acc.step(list(enumerate(_batches(3))), Faults(model, {0: "raise"}))
    assert seen == [4, 4]
