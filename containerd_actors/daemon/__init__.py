"""The daemon: the actors wired together under one trio.run (see docs/ARCHITECTURE.md)."""
