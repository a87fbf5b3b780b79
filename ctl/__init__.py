"""``actr``: the terminal client of containerd-actors, modelled on the original ``ctr`` CLI.

It imports nothing of ours but ``containerd_actors.client``, which re-exports the wire types it
needs, so it exercises exactly what third-party clients get.
"""
