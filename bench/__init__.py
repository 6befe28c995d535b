"""The throughput benchmark: `python -m bench.run` (or `make bench`) rewrites BENCHMARKS.md."""
