"""The daemon: actors wired together under one trio.run (see DESIGN.md §2)."""
