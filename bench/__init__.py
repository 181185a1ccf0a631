"""Benchmarks: each ``bench/bench_*.py`` exposes ``run(args) -> list[Result]``.

Every figure is compared with a baseline measured in the same run, so results
stay meaningful on any machine; ``make bench`` prints a table and writes
``bench/results.json``.
"""
