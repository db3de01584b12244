"""Observability: Prometheus metrics for every component."""
