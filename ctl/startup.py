"""No cyclic garbage collection while a one-shot ``actr`` command starts, until it has to last.

Why: starting up creates tens of thousands of objects (the wire classes, the parser) and none of
them is garbage, so the collector's passes over them are wasted: ~3 ms of a ~65 ms command. A
one-shot command ends before it matters; a command that can run for long (a stream under trio,
``exec -a`` and ``start -a`` without a terminal, ``logs``) turns it back on first, with what exists
by then frozen out of its way (``gc.freeze``).
"""

from __future__ import annotations

import gc


def pause_collection() -> None:
    """From the start of ``actr`` (``console_main``), not in a library caller's process."""
    gc.disable()


def lasting() -> None:
    """This command may run for long: collect cycles again (a no-op where it was never paused)."""
    if not gc.isenabled():
        gc.freeze()
        gc.enable()
