"""Worker processes for pure-Python work (the built-in minimizer, check).

Forked on Linux, whatever the interpreter's default: a forked worker starts with every module
of the parent already imported (gobtfgen, pyelftools) and costs a few milliseconds, where a
forkserver or spawned one imports them again (tens of milliseconds each, and Python 3.14 made
forkserver the Linux default). The pool forks all its workers at the first submit, before it
starts its own thread, so no thread is running at fork time; what the parent prepared before
(the built-in minimizer's parsed objects, Minimizer.prepare) is the workers' for free.
Elsewhere (macOS, where fork is unsafe, and Windows) the platform default stands.
"""

from __future__ import annotations

import gc
import multiprocessing
import sys
from concurrent.futures import ProcessPoolExecutor


def process_pool(max_workers: int) -> ProcessPoolExecutor:
    if sys.platform != "linux":
        return ProcessPoolExecutor(max_workers=max_workers)
    # What the parent holds now is read, not changed, by the workers: keep the collector out of
    # it, so their collections do not copy the parent's pages (gc.freeze's documented use).
    gc.freeze()
    return ProcessPoolExecutor(max_workers=max_workers,
                               mp_context=multiprocessing.get_context("fork"))
