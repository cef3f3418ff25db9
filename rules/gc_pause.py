"""Pause Python's cyclic garbage collector while a large rule set is built.

Compiling 100,000 rules allocates millions of long-lived containers (parsed documents,
compiled parts, index buckets).  Every allocation burst triggers a collection, and each
full collection walks every object alive, the rules already built included: the
collector cost more than the compiling itself.  The objects built here are kept (or freed
by reference counting): there are no cycles worth collecting before the build ends.

The pause is process-wide (that is how ``gc`` works) and nests: the collector runs again
when the last build, of any thread, ends, if it was running when the first began.

Once built, a rule set lives as long as the process serves it, and a full collection
would still walk all of it, again and again, to find nothing: with 100,000 rules each
full collection stops every thread for about half a second (the evaluation loop among
them).  ``freeze_long_lived`` moves what is alive into the collector's permanent
generation, which it never walks.  Compiled rules hold no reference cycles, so a frozen
rule that is replaced or removed is still freed at once by reference counting.
"""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator
from contextlib import contextmanager

_lock = threading.Lock()
_builds = 0
_was_enabled = False


@contextmanager
def gc_paused() -> Iterator[None]:
    """Run the block with the cyclic collector off (see the module docstring)."""
    global _builds, _was_enabled
    with _lock:
        if _builds == 0:
            _was_enabled = gc.isenabled()
            gc.disable()
        _builds += 1
    try:
        yield
    finally:
        with _lock:
            _builds -= 1
            if _builds == 0 and _was_enabled:
                gc.enable()


def freeze_long_lived(*, collect_first: bool) -> None:
    """Hide every object alive now from later full collections (module docstring).

    ``collect_first``: collect once before, so that no cyclic garbage alive now stays
    for ever; that walks everything once, so only where a pause is harmless (before the
    process starts evaluating).  Without it, the cyclic garbage of the moment (little,
    right after a batch) is kept.
    """
    if collect_first:
        gc.collect()
    gc.freeze()
