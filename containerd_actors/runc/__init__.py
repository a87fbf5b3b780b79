"""Driving the runc binary: the driver, process spawning, OCI bundles. Knows nothing of nng or actors."""
