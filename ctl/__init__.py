"""``actr``: the terminal client of containerd-actors, modelled on the original ``ctr`` CLI.

It talks to the daemon only through ``containerd_actors.client`` and the wire types in
``containerd_actors.protocol``, so it exercises exactly what third-party clients get.
"""
