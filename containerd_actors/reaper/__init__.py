"""The reaper process (the daemon's long-lived parent) and its wire to the API server."""
