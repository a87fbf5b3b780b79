"""The state directory: its layout, the one-daemon lock, and recovery of records."""
