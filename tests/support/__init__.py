"""What tests share: the daemon launcher (the benchmarks use it too), bundles, containers run with runc
directly, the daemon's actors in the test's own loop (with a fake runc, or the events actor alone), and
one sample instance of every wire type."""
