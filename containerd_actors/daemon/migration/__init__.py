"""Live migration of a running container between daemons: source.py drives it, destination.py
receives it, chunks.py cuts and checks the files, peer.py is the connection between the two."""
