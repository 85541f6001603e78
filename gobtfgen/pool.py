"""Worker processes for pure-Python work (the built-in minimizer, check).

Forked on Linux, whatever the interpreter's default: a forked worker starts with every module
of the parent already imported (gobtfgen, pyelftools) and costs a few milliseconds, where a
forkserver or spawned one imports them again (tens of milliseconds each, and Python 3.14 made
forkserver the Linux default). The pool forks all its workers at the first submit, before it
starts its own thread, so no thread is running at fork time. Elsewhere (macOS, where fork is
unsafe, and Windows) the platform default stands.
"""

from __future__ import annotations

import multiprocessing
import sys
from concurrent.futures import ProcessPoolExecutor


def process_pool(max_workers: int) -> ProcessPoolExecutor:
    context = multiprocessing.get_context("fork") if sys.platform == "linux" else None
    return ProcessPoolExecutor(max_workers=max_workers, mp_context=context)
