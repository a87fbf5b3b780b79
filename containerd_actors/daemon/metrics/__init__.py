"""The metrics actor, its go-metrics style registry, and the Prometheus HTTP endpoint."""
