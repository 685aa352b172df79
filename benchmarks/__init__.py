"""vidseg.benchmarks: ``vidseg-bench`` (per-frame latency, pipeline throughput)."""
