"""Benchmark of a whole daily run at 100k and 1M open títulos (issue 8). See bench/README.md."""
