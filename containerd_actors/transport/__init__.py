"""The only code that touches pynng's private lib/ffi: the request side and the reply side.

``nng`` holds every raw pointer (messages, aios, contexts) behind an owner that refuses a use after
free; ``request`` is the client's raw Req0, ``reply`` the daemon's cooked Rep0. Importing ``nng``
(which both import) first checks that nng is the release line they were tested with
(``version``). ``tls`` loads pynng only when a configuration is built, so the reaper, which parses
the same flags, can name certificate files without loading nng.
"""
