"""`--format ld`: the tar.gz of targets/targz.py, and min_core_btfs_tar.o made from it by
`ld -r -b binary`, whose `_binary_min_core_btfs_tar_gz_start`/`_end` symbols are the ones
bcc's btf_helpers.c declares."""

from __future__ import annotations

import dataclasses
import tempfile
from pathlib import Path

from gobtfgen import tools
from gobtfgen.targets import Rendered, Target, TargetInput, targz

LD_FILE = "min_core_btfs_tar.o"


def ld_object(tar_gz: bytes, *, ld: str = "ld") -> bytes:
    """min_core_btfs_tar.o: the tar.gz as a relocatable object, as bcc's Makefile links it."""
    with tempfile.TemporaryDirectory(prefix="gobtfgen-ld-") as tmp:
        source = Path(tmp) / targz.TARGZ_FILE
        source.write_bytes(tar_gz)
        output = Path(tmp) / LD_FILE
        tools.ld_binary(ld, source, output)
        return output.read_bytes()


def _render(inp: TargetInput) -> Rendered:
    archive = targz.TARGET.render(inp)
    obj = ld_object(archive.files[targz.TARGZ_FILE], ld=inp.options.ld)
    return dataclasses.replace(archive, files={**archive.files, LD_FILE: obj})


TARGET = Target(name="ld", templates=(), render=_render)
