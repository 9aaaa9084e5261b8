"""Benchmarks of the Xception Explorer (figures, not pass/fail): `python -m bench.run`."""
