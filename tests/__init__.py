"""Cross-service tests and benchmarks (a package, so `python -m tests.bench.run` resolves here)."""
