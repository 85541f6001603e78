"""The bpftool backend: `bpftool gen min_core_btf INPUT OUTPUT OBJECT...`."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

from gobtfgen import tools
from gobtfgen.errors import ToolError
from gobtfgen.minimize import MinimizeError, Minimizer


class BpftoolMinimizer(Minimizer):
    name = "bpftool"
    parallel = "threads"

    def __init__(self, *, bpftool: str = "bpftool") -> None:
        # Resolve and version-check up front: a missing or old bpftool fails the whole run once,
        # with advice, instead of failing every kernel.
        self.exe, self.version = tools.bpftool_version(bpftool)

    def identity(self) -> str:
        return "bpftool " + ".".join(map(str, self.version))

    def minimize(self, kernel_btf: Path, objects: Sequence[Path]) -> bytes:
        # bpftool writes its output to a file. A named temp file rather than a temp directory
        # per kernel: creating and removing directories cost ~4 ms a kernel on these machines.
        fd, name = tempfile.mkstemp(prefix="gobtfgen-min-", suffix=".btf")
        os.close(fd)
        out = Path(name)
        try:
            try:
                tools.bpftool_min_core_btf(self.exe, kernel_btf, out, objects)
            except ToolError as exc:
                raise MinimizeError(str(exc),
                                    cacheable=not isinstance(exc, tools.ToolKilled)) from None
            data = out.read_bytes()
            if not data:
                raise MinimizeError("bpftool gen min_core_btf exited 0 but wrote no output")
            return data
        finally:
            with contextlib.suppress(OSError):
                out.unlink()
