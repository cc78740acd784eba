"""Benchmarks of genretag (not tests): ``python -m bench.run [--quick]``; see bench/README.md."""
