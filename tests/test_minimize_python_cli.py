"""`gobtfgen minimize --minimizer python|python-compat` end to end through the CLI."""

from __future__ import annotations

from pathlib import Path

import pytest

from gobtfgen.archive import read_kernel_btf
from gobtfgen.btf import BTF
from gobtfgen.cli import main
from gobtfgen.minimize import get_minimizer
from tests import realkernels
from tests.bpfobjs import bpf_objects, run_bpftool_min

__all__ = ["bpf_objects"]

pytestmark = pytest.mark.tools


def test_registry_names() -> None:
    for name in ("python", "python-compat"):
        m = get_minimizer(name)
        assert m.name == name and m.parallel == "processes"
        assert m.identity().startswith(name + " ")
    assert get_minimizer("python").identity() != get_minimizer("python-compat").identity()


def test_cli_minimize(tmp_path: Path, bpf_objects: dict[str, Path]) -> None:
    kernel = realkernels.kernel("debian/12/x86_64/6.1.0-56-amd64")
    objs = [bpf_objects["tracer"], bpf_objects["fields"]]
    raw = tmp_path / "kernel.btf"
    raw.write_bytes(read_kernel_btf(kernel))
    theirs, err = run_bpftool_min(raw, tmp_path / "bpftool.btf", objs)
    assert theirs is not None, err
    for name in ("python-compat", "python"):
        out = tmp_path / f"{name}.btf"
        assert main(["minimize", str(kernel), str(out), *map(str, objs),
                     "--minimizer", name]) == 0
        data = out.read_bytes()
        BTF(data).validate()
        if name == "python-compat":
            assert data == theirs
        else:
            assert len(data) * 2 < len(theirs)  # enum bpf_func_id keeps 4 enumerators
