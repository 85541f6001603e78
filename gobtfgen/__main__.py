"""`python -m gobtfgen` and the `gobtfgen` console script.

The CLI is imported inside the handler: a Ctrl-C while Python is still importing gobtfgen's
modules ends with the same one-line message and exit 130 as one during the run. A plain
`gobtfgen minimize` (a drop-in for bpftool, whose whole process takes about as long as
Python's start) is answered before the CLI is imported at all, from its kept result or by the
minimizer alone (gobtfgen.commands.minimize_fast)."""

from __future__ import annotations

import os
import sys


def _exit_now(status: int) -> None:
    """End the process without the interpreter's teardown, which frees every object and
    module one by one before the kernel frees the whole address space anyway: 1.5-2 ms of CPU,
    an eighth of a replayed minimize (measured with `python -c` and an os._exit twin). Only
    when the command's work is done and nothing was registered to run at exit (coverage and
    the like register atexit handlers, and then the ordinary exit runs)."""
    import atexit

    if atexit._ncallbacks():
        return
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except (OSError, ValueError):
        return  # the ordinary exit reports what it reports
    os._exit(status)


def main() -> int:
    import gc

    # The fast path runs with the cyclic collector paused: its imports and one kernel's
    # minimization make no garbage cycles worth collecting, and the collections the
    # allocations would trigger cost a cold run about 0.5 ms (three of them, measured with
    # gc.callbacks). Anything not answered there gets the collector back (finally).
    gc.disable()
    try:
        from gobtfgen.commands.minimize_fast import serve

        status = serve(sys.argv[1:])
        if status is not None:
            _exit_now(status)
            return status
        from gobtfgen.cli import main as cli_main
    except KeyboardInterrupt:
        print("gobtfgen: interrupted; outputs left as they were", file=sys.stderr)
        return 130
    finally:
        gc.enable()
    return cli_main(replay=False)


if __name__ == "__main__":
    sys.exit(main())
