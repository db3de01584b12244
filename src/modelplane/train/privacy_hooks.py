"""The training loop's seam for a TrainingJob's ``spec.privacy``: DP-SGD with Opacus and FGSM/PGD
adversarial training, driven by the spec the job controller puts in ``MODELPLANE_PRIVACY_SPEC``.

The script calls :func:`make_private` once and uses what it returns; without a privacy block the
same script runs unchanged (every hook is a no-op), so one script serves private and plain jobs::

    ctx = mt.init()
    priv = mt.make_private(model, optimizer, loader, context=ctx)
    model, optimizer, loader = priv.model, priv.optimizer, priv.data_loader
    ctx.checkpoint.track(**priv.checkpointables())
    ctx.checkpoint.resume()
    for epoch in priv.epochs(EPOCHS):          # ends early when the budget is exhausted
        for x, y in loader:
            optimizer.zero_grad()
            priv.loss(x, y).backward()         # clean + attacked examples when adversarial is set
            optimizer.step()
        priv.end_epoch()                       # epsilon -> heartbeat -> a PrivacyBudget job event
        ctx.checkpoint.save(priv.steps)
    ctx.close()

Budget rule: after each epoch the accountant's epsilon is reported; if one more epoch would take
it past ``targetEpsilon`` the budget is exhausted and training stops there (the generator ends,
or :meth:`PrivateTraining.check` raises :class:`PrivacyBudgetExhausted`): a clean stop, exit 0.
The accountant's history is part of ``state_dict`` so that a resumed job keeps counting what it
spent instead of starting from zero.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass
from typing import Any

from modelplane.core.errors import InvalidSpec
from modelplane.core.spec import PRIVACY_SPEC_ENV, AdversarialSpec, DifferentialPrivacySpec, PrivacySpec
from modelplane.privacy.errors import BudgetExhausted
from modelplane.train.heartbeat import Heartbeat

DEFAULT_PGD_STEPS = 7
HISTORY_LIMIT = 1000  # epochs kept in the heartbeat record (the job events keep them all)


class PrivacyBudgetExhausted(BudgetExhausted):
    """One more epoch would spend more than ``targetEpsilon``: stop, checkpoint, exit 0."""

    def __init__(self, message: str, *, budget: EpochBudget | None = None) -> None:
        super().__init__(message, hint="raise targetEpsilon or noiseMultiplier, or train fewer epochs",
                         field="spec.privacy.differentialPrivacy.targetEpsilon")
        self.budget = budget


@dataclass(frozen=True)
class EpochBudget:
    """What one epoch spent. ``epsilon`` is None when the job has no differential privacy."""

    epoch: int
    steps: int
    epsilon: float | None
    next_epsilon: float | None
    """epsilon after one more epoch at the same noise and sampling rate"""
    exhausted: bool
    loss: float | None = None


def privacy_spec_from_env(env: Mapping[str, str] | None = None) -> PrivacySpec | None:
    """The job's ``spec.privacy`` as the controller passed it, or None when it has none."""
    raw = (os.environ if env is None else env).get(PRIVACY_SPEC_ENV, "")
    if not raw.strip():
        return None
    from pydantic import ValidationError

    from modelplane.core.spec import invalid_spec_from

    try:
        return PrivacySpec.model_validate(json.loads(raw))
    except json.JSONDecodeError as exc:
        raise InvalidSpec(f"{PRIVACY_SPEC_ENV} is not JSON: {exc}", field=PRIVACY_SPEC_ENV,
                          hint="it is set by the job controller from spec.privacy; unset it to train without") from None
    except ValidationError as exc:
        raise invalid_spec_from(exc, prefix="spec.privacy.") from None


class PrivateTraining:
    """What :func:`make_private` returns: the (wrapped) model, optimizer and loader, plus the epoch
    bookkeeping and the adversarial loss. Build it with :func:`make_private`."""

    def __init__(self, spec: PrivacySpec | None, model: Any, optimizer: Any, data_loader: Any, *,
                 heartbeat: Heartbeat, epochs: int | None, input_range: tuple[float, float] | None,
                 seed: int | None) -> None:
        self.spec = spec
        self.dp: DifferentialPrivacySpec | None = spec.differential_privacy if spec else None
        self.adversarial: AdversarialSpec | None = spec.adversarial if spec else None
        self.heartbeat = heartbeat
        self.input_range = input_range
        self.planned_epochs = epochs if epochs is not None else (self.dp.epochs if self.dp else None)
        self.log: list[dict[str, Any]] = []
        self.exhausted = False
        self.engine: Any = None
        self._raw_model, self._raw_optimizer = model, optimizer
        self.model, self.optimizer, self.data_loader = model, optimizer, data_loader
        if self.dp is not None:
            self._wrap(seed)

    # -- DP-SGD -------------------------------------------------------------------------------

    def _wrap(self, seed: int | None) -> None:
        dp = self.dp
        assert dp is not None
        from modelplane.privacy.errors import require

        require("opacus")
        from opacus import PrivacyEngine

        generator = None
        if seed is not None:
            import torch

            generator = torch.Generator().manual_seed(seed)
        self.engine = PrivacyEngine(accountant=dp.accountant)
        common = {"module": self.model, "optimizer": self.optimizer, "data_loader": self.data_loader,
                  "max_grad_norm": dp.max_grad_norm, "noise_generator": generator}
        if dp.noise_multiplier is None:
            if self.planned_epochs is None:  # spec validation makes this unreachable from a manifest
                raise InvalidSpec("differentialPrivacy without noiseMultiplier needs epochs",
                                  field="spec.privacy.differentialPrivacy.epochs", hint="set epochs")
            self.model, self.optimizer, self.data_loader = self.engine.make_private_with_epsilon(
                target_epsilon=dp.target_epsilon, target_delta=dp.delta, epochs=self.planned_epochs, **common)
        else:
            self.model, self.optimizer, self.data_loader = self.engine.make_private(
                noise_multiplier=dp.noise_multiplier, **common)
        size = _dataset_size(self.data_loader)
        if size and dp.delta >= 1.0 / size:
            print(f"modelplane: privacy delta {dp.delta:g} is not below 1/{size} training examples; "
                  "the guarantee is weak (use e.g. 1e-5)", file=sys.stderr, flush=True)
        first = self._epsilon_after(self.steps_per_epoch, history=[])
        if first > dp.target_epsilon:
            raise PrivacyBudgetExhausted(
                f"targetEpsilon {dp.target_epsilon:g} does not allow a single epoch: one epoch at noise "
                f"multiplier {self.noise_multiplier:.3g} and sampling rate {self.sample_rate:.3g} spends "
                f"epsilon {first:.3g} at delta {dp.delta:g}")

    @property
    def enabled(self) -> bool:
        """True when DP-SGD is on (an adversarial-only job is not differentially private)."""
        return self.dp is not None

    @property
    def noise_multiplier(self) -> float | None:
        return float(self.optimizer.noise_multiplier) if self.dp is not None else None

    @property
    def steps_per_epoch(self) -> int:
        return len(self.data_loader)

    @property
    def sample_rate(self) -> float:
        """Opacus' accountant hook counts every step at 1 / len(loader); the projection must match."""
        return 1.0 / max(1, self.steps_per_epoch)

    @property
    def steps(self) -> int:
        """Optimizer steps taken over the whole run (restored on resume)."""
        if self.engine is None:
            return int(self.log[-1]["steps"]) if self.log else 0
        return sum(int(n) for _, _, n in self.engine.accountant.history)

    def epsilon(self) -> float | None:
        """Epsilon spent so far at the spec's delta (None without DP)."""
        if self.dp is None:
            return None
        return self._epsilon_after(0)

    def _epsilon_after(self, extra_steps: int, history: list[Any] | None = None) -> float:
        assert self.dp is not None and self.engine is not None
        from opacus.accountants import create_accountant

        past = list(self.engine.accountant.history) if history is None else history
        if extra_steps:
            past.append((self.noise_multiplier, self.sample_rate, extra_steps))
        if not past:
            return 0.0
        acc = create_accountant(mechanism=self.dp.accountant)
        acc.history = past
        return float(acc.get_epsilon(delta=self.dp.delta))

    # -- epochs -------------------------------------------------------------------------------

    def epochs(self, total: int | None = None) -> Iterator[int]:
        """Epoch indices from where the run stands (0, or the next one after a resume) up to
        ``total``; ends early, after the last epoch the budget allows."""
        if total is not None:
            self.planned_epochs = total
        if total is None:
            total = self.planned_epochs
        if total is None:
            raise InvalidSpec("the number of epochs is unknown", field="epochs",
                              hint="pass epochs(total) or set spec.privacy.differentialPrivacy.epochs")
        epoch = len(self.log)
        while epoch < total and not self.exhausted:
            yield epoch
            if len(self.log) == epoch:  # the loop body did not account for it: do it here
                self.end_epoch()
            epoch = len(self.log)

    def end_epoch(self, loss: float | None = None) -> EpochBudget:
        """Account for the epoch just finished: epsilon now, epsilon after one more, whether the
        budget is exhausted (one more epoch would exceed ``targetEpsilon`` while more are planned);
        the record goes into the rank's heartbeat and from there into the job's events."""
        epoch = len(self.log) + 1
        eps = nxt = None
        exhausted = False
        if self.dp is not None:
            eps = self.epsilon()
            nxt = self._epsilon_after(self.steps_per_epoch)
            more_planned = self.planned_epochs is None or epoch < self.planned_epochs
            exhausted = nxt > self.dp.target_epsilon and more_planned
        steps = self.steps if self.engine is not None else (self.steps + self.steps_per_epoch)
        budget = EpochBudget(epoch=epoch, steps=steps, epsilon=eps, next_epsilon=nxt, exhausted=exhausted,
                             loss=loss)
        self.log.append({k: v for k, v in asdict(budget).items() if v is not None})
        self.exhausted = exhausted
        self._report()
        return budget

    def check(self) -> None:
        """Raise :class:`PrivacyBudgetExhausted` when no further epoch is allowed (for scripts with
        their own epoch loop; catch it, save the final checkpoint and exit 0)."""
        if self.exhausted and self.dp is not None:
            last = self.log[-1]
            raise PrivacyBudgetExhausted(
                f"privacy budget exhausted after epoch {last['epoch']}: epsilon {last['epsilon']:.3f}, one more "
                f"epoch would reach {last['next_epsilon']:.3f} > targetEpsilon {self.dp.target_epsilon:g}",
                budget=EpochBudget(**last))

    def record(self) -> dict[str, Any]:
        """The heartbeat's ``privacy`` entry: latest epsilon, the per-epoch history, exhausted."""
        out: dict[str, Any] = {"epoch": len(self.log), "steps": self.steps, "exhausted": self.exhausted,
                               "history": [{"epoch": e["epoch"], "epsilon": e.get("epsilon"), "steps": e["steps"]}
                                           for e in self.log[-HISTORY_LIMIT:]]}
        if self.dp is not None:
            out |= {"epsilon": self.log[-1]["epsilon"] if self.log else 0.0, "delta": self.dp.delta,
                    "targetEpsilon": self.dp.target_epsilon, "noiseMultiplier": self.noise_multiplier,
                    "sampleRate": self.sample_rate, "accountant": self.dp.accountant}
            if self.log:
                out["nextEpsilon"] = self.log[-1].get("next_epsilon")
        if self.adversarial is not None:
            out["adversarial"] = self.adversarial.method
        return out

    def _report(self) -> None:
        self.heartbeat.beat(max(self.heartbeat.step, self.steps), privacy=self.record())

    # -- adversarial training -----------------------------------------------------------------

    def attack_config(self) -> Any:
        from modelplane.privacy.adversarial import AttackConfig

        adv = self.adversarial
        if adv is None:
            return None
        steps = 1 if adv.method == "fgsm" else (adv.steps or DEFAULT_PGD_STEPS)
        alpha = adv.epsilon if adv.method == "fgsm" else (adv.alpha or 2.5 * adv.epsilon / steps)
        lo, hi = self.input_range if self.input_range is not None else (float("-inf"), float("inf"))
        return AttackConfig(name=adv.method, epsilon=adv.epsilon, step_size=alpha, steps=steps, lo=lo, hi=hi)

    def perturb(self, x: Any, y: Any) -> Any:
        """``x`` attacked with the spec's method against the current model (``x`` itself without
        an adversarial block). Opacus' per-example hooks are off meanwhile: the attack's input
        gradients must not count as a training step's per-example gradients."""
        cfg = self.attack_config()
        if cfg is None or len(x) == 0:
            return x
        from modelplane.privacy.adversarial import attack

        return attack(self.model, x, y, cfg)  # switches the hooks off around the attack

    def loss(self, x: Any, y: Any, loss_fn: Callable[[Any, Any], Any] | None = None) -> Any:
        """The training loss of one batch: clean, or ``(1 - ratio) x clean + ratio x attacked``.
        Both terms come from one backward pass, so under DP each example's two gradients are summed
        before clipping: one example, one clipped contribution."""
        if loss_fn is None:
            import torch

            loss_fn = torch.nn.functional.cross_entropy
        adv = self.adversarial
        if adv is None or len(x) == 0:
            return loss_fn(self.model(x), y)
        attacked = loss_fn(self.model(self.perturb(x, y)), y)
        if adv.ratio >= 1.0:
            return attacked
        return (1.0 - adv.ratio) * loss_fn(self.model(x), y) + adv.ratio * attacked

    # -- checkpoints --------------------------------------------------------------------------

    def checkpointables(self) -> dict[str, Any]:
        """What to pass to ``ctx.checkpoint.track``: the unwrapped model and optimizer (their
        state_dicts keep their usual keys) and this object (the accountant's history)."""
        return {"model": self._raw_model, "optimizer": self._raw_optimizer, "privacy": self}

    def state_dict(self) -> dict[str, Any]:
        history = [list(h) for h in self.engine.accountant.history] if self.engine is not None else []
        return {"history": history, "log": list(self.log), "exhausted": self.exhausted}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if self.engine is not None:
            self.engine.accountant.history = [(float(s), float(q), int(n)) for s, q, n in state.get("history", [])]
        self.log = [dict(e) for e in state.get("log", [])]
        self.exhausted = bool(state.get("exhausted", False))
        if self.log:
            self._report()


def make_private(model: Any, optimizer: Any, data_loader: Any, *, context: Any = None,
                 heartbeat: Heartbeat | None = None, spec: PrivacySpec | None = None, epochs: int | None = None,
                 input_range: tuple[float, float] | None = (0.0, 1.0), seed: int | None = None,
                 env: Mapping[str, str] | None = None) -> PrivateTraining:
    """Apply the job's privacy options to a model, optimizer and loader.

    ``spec`` defaults to ``MODELPLANE_PRIVACY_SPEC`` (set by the job controller); without one
    nothing is wrapped. Epsilon reports go to ``heartbeat``, else ``context.heartbeat`` (the
    TrainContext of ``modelplane.train.init()``). ``epochs`` is the planned number (needed when
    the spec calibrates noise and gives none). ``input_range`` bounds attacked inputs (None: no
    clamping). ``seed`` makes DP noise reproducible (tests; leave None in production)."""
    if spec is None:
        spec = privacy_spec_from_env(env)
    if heartbeat is None:
        heartbeat = context.heartbeat if context is not None else Heartbeat()
    return PrivateTraining(spec, model, optimizer, data_loader, heartbeat=heartbeat, epochs=epochs,
                           input_range=input_range, seed=seed)


def _dataset_size(loader: Any) -> int:
    try:
        return len(loader.dataset)
    except (AttributeError, TypeError):
        return 0
