"""What tests share: the daemon launcher (the benchmarks use it too), bundles, containers run with runc
directly, and one sample instance of every wire type."""
