"""A one-view Django site for the benchmarks; its DATABASES come from ``BENCH_DJANGO`` (JSON)."""
