"""Worker processes fork on Linux whatever the interpreter's default start method is (Python
3.14 made it forkserver, whose workers import gobtfgen again)."""

from __future__ import annotations

import multiprocessing
import sys

import pytest

from gobtfgen.pool import process_pool


def _process_name() -> str:
    return multiprocessing.current_process().name  # runs in the worker


@pytest.mark.skipif(sys.platform != "linux", reason="fork is chosen on Linux only; elsewhere the "
                    "platform default stands (run on Linux to test it)")
def test_workers_are_forked() -> None:
    with process_pool(1) as pool:
        assert pool._mp_context.get_start_method() == "fork"  # type: ignore[attr-defined]
        assert pool.submit(_process_name).result(timeout=30).startswith("ForkProcess")
