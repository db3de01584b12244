"""Autoscaling policies, pure: time and observations come in as arguments, decisions go out.

``replica``: how many replicas a deployment wants (KPA, HPA, and our queue-aware policy).
``nodegroup``: which nodes to provision, drain or terminate in ASG-like groups (spot and on-demand).
``replay``: a discrete-event replay of a request trace through both, for benchmarks and tests.
Imports only ``modelplane.core``.
"""
