"""The only code that touches pynng's private lib/ffi: the request side and the reply side.

``nng`` holds every raw pointer (messages, aios, contexts) behind an owner that refuses a use after
free; ``request`` is the client's raw Req0, ``reply`` the daemon's cooked Rep0. Importing any of
them first checks that nng is the release line they were tested with (``version``).
"""

from containerd_actors.transport.version import check_nng_version, installed_nng_version

check_nng_version(installed_nng_version())
