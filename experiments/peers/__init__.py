"""The measurements behind experiments/bench_peers.py, run in a child process per thread setting."""
