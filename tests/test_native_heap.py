"""keep_heap (gobtfgen/_native.c): a worker that inflates, strips and stores kernel after
kernel reuses its freed buffers instead of faulting fresh pages in for every kernel.

Measured, not assumed: a fresh interpreter does a cold generate's per-kernel work (the
archive file inflated, the BTF stripped, the cache entry encoded) on one real kernel several
times and counts the minor page faults of the repeats, with the heap kept and without."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from gobtfgen.btf import native as native_mod
from tests import realkernels

_ROUNDS = """
import json, resource, sys
from pathlib import Path
from gobtfgen.archive import kernel_btf_of
from gobtfgen.btf import native, strip
from gobtfgen.cache import RawEntry
kept = native.keep_heap() if sys.argv[2] == "keep" else False
path = Path(sys.argv[1])
def one():
    raw = kernel_btf_of(path.read_bytes(), what=path)
    stripped = strip.strip(raw)
    RawEntry.encode("0" * 64, stripped or raw, stripped=stripped is not None)
one()  # the first kernel faults its buffers in either way
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(4):
    one()
print(json.dumps({"kept": kept,
                  "faults": resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before}))
"""


def _faults(path: str, mode: str) -> dict[str, object]:
    done = subprocess.run([sys.executable, "-c", _ROUNDS, path, mode], capture_output=True,
                          text=True, check=True)
    result: dict[str, object] = json.loads(done.stdout)
    return result


@pytest.mark.skipif(native_mod.native is None or sys.platform != "linux",
                    reason="keep_heap is in the compiled module, for glibc (build gobtfgen with "
                           "a C compiler on glibc Linux to test it)")
def test_kept_heap_stops_refaulting_per_kernel() -> None:
    path = str(realkernels.kernel("debian/12/x86_64/6.1.0-56-amd64"))
    default, kept = _faults(path, "default"), _faults(path, "keep")
    assert kept["kept"] is True
    assert isinstance(default["faults"], int) and isinstance(kept["faults"], int)
    # 4 repeats of a 4.4 MB kernel: about 3,500 pages each by default (14 MB of buffers).
    assert default["faults"] > 4 * 1000, default
    assert kept["faults"] < default["faults"] / 10, (default, kept)
