"""gobtfgen._native (gobtfgen/_native.c) when it was built, else None.

The compiled loops are optional: a wheel built without a C compiler, or
GOBTFGEN_NO_NATIVE=1 in the environment, gives the pure-Python code, which is the reference
(tests/test_native.py checks that both give the same bytes). Importing the extension costs
about 0.1 ms, so `gobtfgen minimize`'s cold path imports it unconditionally.
"""

from __future__ import annotations

import os

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (mypy reads this name)
if TYPE_CHECKING:
    from types import ModuleType

native: ModuleType | None = None
if os.environ.get("GOBTFGEN_NO_NATIVE", "") in ("", "0"):
    try:
        from gobtfgen import _native as native
    except ImportError:  # not built (no compiler when the wheel was made): the Python path
        native = None


def available() -> bool:
    return native is not None


# A worker's heap (see keep_heap in _native.c): blocks up to 32 MiB (glibc's cap; a kernel's
# largest buffer, its inflated tar, is 4-12 MB) come from the heap, which keeps up to 256 MiB
# of freed memory rather than fault it in again for the next kernel.
HEAP_BLOCK = 32 << 20
HEAP_KEEP = 256 << 20


def keep_heap() -> bool:
    """Keep freed buffers for the next kernel, in this process and the workers it forks from
    now on (malloc's settings are copied by fork). Whether it took effect: not without the
    compiled module or with a C library other than glibc, which only costs system time."""
    return native is not None and native.keep_heap(HEAP_BLOCK, HEAP_KEEP)
