"""Throwaway real servers for tests and benchmarks (PostgreSQL now; more as components need them)."""
