"""Benchmarks on the lab: converge/no-op timings, scale, failover outages (see README)."""
