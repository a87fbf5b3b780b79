"""Linux helpers without actors: fds, /proc, pidfd reaping, cgroups (stats, OOM)."""
