"""Test support shared by tests/ and benchmarks/: storage probes, host-shaped requests, fault scenarios."""
