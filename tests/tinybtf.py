"""Small, valid raw BTF blobs for tests: one `int` and one struct whose name says which
kernel key the blob stands for, so a test can tell which blob a lookup returned."""

from __future__ import annotations

import re
import struct

BTF_MAGIC = 0xEB9F
_KIND_INT, _KIND_STRUCT = 1, 4


def label(key: str) -> str:
    """The struct name of a key's blob (tests/gotest/btfgen_vectors_test.go computes the same)."""
    return "k_" + re.sub(r"[^A-Za-z0-9_]", "_", key)


def tiny_btf(name: str, *, padding: int = 0) -> bytes:
    """Raw little-endian BTF: [1] int, [2] struct <name> { int v; }.

    padding adds unreferenced strings, to give benchmark blobs a realistic size.
    """
    # Strings in first-use order, as bpftool and gobtfgen's minimizers write them, so the
    # payload stores these blobs as nodes (tests/test_pack.py checks that).
    strings = b"\0int\0" + name.encode() + b"\0v\0"
    name_int, name_struct, name_v = 1, 5, 6 + len(name.encode())
    strings += b"".join(b"pad_%06d\0" % i for i in range(padding))
    types = struct.pack("<IIII", name_int, _KIND_INT << 24, 4, (1 << 24) | 32)
    types += struct.pack("<III", name_struct, (_KIND_STRUCT << 24) | 1, 4)
    types += struct.pack("<III", name_v, 1, 0)
    header = struct.pack("<HBBIIIII", BTF_MAGIC, 1, 0, 24, 0, len(types), len(types),
                         len(strings))
    return header + types + strings
