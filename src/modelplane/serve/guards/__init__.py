"""Guards in the inference path: input filters before the model, output monitors after it."""

from modelplane.serve.guards.base import Action, Guard, GuardDecision, GuardPipeline, GuardVerdict

__all__ = ["Action", "Guard", "GuardDecision", "GuardPipeline", "GuardVerdict"]
