"""The benchmarks: each starts what it measures (a local stack, API processes) and takes it down at the end."""
