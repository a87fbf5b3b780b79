"""The container actor: one per container, owning its runc init, exec'd processes and stdio."""
