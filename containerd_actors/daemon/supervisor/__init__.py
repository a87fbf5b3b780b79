"""The supervisor: the registry of container actors, which routes requests to them."""
