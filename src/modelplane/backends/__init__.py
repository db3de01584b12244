"""Execution backends: carry out placements decided by the scheduler (local, ray, kubernetes)."""
