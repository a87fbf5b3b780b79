"""containerd-actors: a runc-driving container daemon built as a Trio actor system."""

__version__ = "0.1.0"
