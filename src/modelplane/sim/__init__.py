"""Replays of real cluster traces against scheduling policies, on a virtual clock.

``traces`` loads the public traces in ``../shared/data/traces``; ``engine`` is the discrete-event
simulator that drives any ``Scheduler``; ``openb`` is the vectorised placement replay of the FGD
paper's protocol; ``policies`` holds the queueing baselines; ``cli_entry`` is what ``modelplane sim``
calls.
"""
