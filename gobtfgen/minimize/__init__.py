"""Minimizers: one kernel BTF + the objects of its arch -> the BTF their CO-RE relocations need.

A pluggable stage: `generate` and `minimize` pick one by name, and its identity() goes into the
cache key, so switching minimizer (or upgrading bpftool) never serves a stale result.
"""

from __future__ import annotations

import abc

# Imported by `gobtfgen minimize`'s replay (gobtfgen.minimize.replay) for BUILTIN_VERSION: only
# what a repeated one-kernel command can afford (pathlib, typing, collections.abc and errors
# cost it 20 ms). typing.TYPE_CHECKING without importing typing (mypy reads this name).
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from pathlib import Path
    from typing import ClassVar

# Version of the built-in minimizers' output: bump when the output of python or python-compat
# may change. Their identity ("python 3") is part of the cache key, and is known here without
# importing them (an unchanged re-run needs the identity, not the minimizer).
BUILTIN_VERSION = "3"


def builtin_identity(name: str) -> str | None:
    """The identity of a built-in minimizer, or None for bpftool (which depends on the tool)."""
    return f"{name} {BUILTIN_VERSION}" if name in ("python", "python-compat") else None


class MinimizeError(Exception):
    """This kernel cannot be minimized for these objects; the message says why (one line).

    cacheable=False for failures that are not the kernel's (the minimizer was killed): those
    are retried on the next run instead of being remembered."""

    def __init__(self, message: str, *, cacheable: bool = True) -> None:
        super().__init__(message)
        self.cacheable = cacheable


class Minimizer(abc.ABC):
    name: ClassVar[str]
    # "threads" when the work happens outside the GIL (a subprocess), "processes" for pure Python.
    parallel: ClassVar[str] = "threads"
    # Whether minimize() reads kernel_btf itself (an external tool) rather than taking data:
    # the cache keeps kernels compressed, so such a minimizer gets a temporary file.
    reads_file: ClassVar[bool] = True

    @abc.abstractmethod
    def identity(self) -> str:
        """Name and version: part of the cache key; changes whenever the output may change."""

    def prepare(self, objects: Sequence[Path]) -> None:
        """Work to do once per run before the workers start (forked workers inherit it). Any
        problem is left for minimize() to report per kernel."""
        return  # nothing by default: bpftool prepares nothing

    @abc.abstractmethod
    def minimize(self, kernel_btf: Path, objects: Sequence[Path], *,
                 data: bytes | None = None, index: Path | None = None) -> bytes:
        """Minimized BTF for a raw kernel BTF file and BPF objects (all of one arch).

        data: the file's bytes when the caller holds them (a minimizer in this process need not
        read them back). index: where this kernel's type index may be kept between runs (the
        cache's raw/<sha>.idx); a minimizer that has no use for one ignores it.
        """


def _bpftool(**options: str) -> Minimizer:
    from gobtfgen.minimize.bpftool import BpftoolMinimizer

    return BpftoolMinimizer(bpftool=options.get("bpftool", "bpftool"))


def _python(compat: bool) -> Callable[..., Minimizer]:
    def make(**_options: str) -> Minimizer:
        from gobtfgen.minimize import python as pymin  # type: ignore[attr-defined,unused-ignore]

        cls = pymin.PythonCompatMinimizer if compat else pymin.PythonMinimizer
        return cls()  # type: ignore[no-any-return,unused-ignore]

    return make


FACTORIES: dict[str, Callable[..., Minimizer]] = {
    "bpftool": _bpftool,
    "python-compat": _python(compat=True),
    "python": _python(compat=False),
}


def available() -> list[str]:
    import importlib.util

    # find_spec, not import: listing the choices must not load the Python minimizer.
    if importlib.util.find_spec("gobtfgen.minimize.python") is None:
        return ["bpftool"]
    return ["bpftool", "python-compat", "python"]


def get_minimizer(name: str, **options: str) -> Minimizer:
    if name not in available():
        from gobtfgen.errors import UsageError

        raise UsageError(f"--minimizer {name!r} is not one of {', '.join(available())}")
    return FACTORIES[name](**options)
