"""Benchmarks of issue 2: API ingest rate (bench.ingest) and projection catch-up (bench.catchup).

Each starts its own local stack in a temporary directory and takes it down at the end;
`python -m bench` runs them all in sequence.
"""
