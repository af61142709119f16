"""Benchmark layer: latency/throughput sweeps over backends, precisions, lengths and batches (see sweep.py)."""
