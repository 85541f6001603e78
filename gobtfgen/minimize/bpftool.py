"""The bpftool backend: `bpftool gen min_core_btf INPUT OUTPUT OBJECT...`."""

from __future__ import annotations

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

    def minimize(self, kernel_btf: Path, objects: Sequence[Path], *,
                 data: bytes | None = None, index: Path | None = None) -> bytes:
        del data, index  # bpftool reads the file itself and keeps nothing between runs
        try:
            data = tools.bpftool_min_core_btf(self.exe, kernel_btf, objects)
        except ToolError as exc:
            raise MinimizeError(str(exc),
                                cacheable=not isinstance(exc, tools.ToolKilled)) from None
        if not data:
            raise MinimizeError("bpftool gen min_core_btf exited 0 but wrote no output")
        return data
