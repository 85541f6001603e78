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
