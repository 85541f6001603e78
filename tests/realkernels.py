"""Every real kernel BTF a test run has: the sample archive (../shared/btfhub-sample, next to a
development checkout: 45 kernels, 4.14 to 6.18, many distros) when present, and the Debian
kernel corpus (tests/corpus.py, fetched by scripts/setup) always. Tests over real kernels take
their kernels from here, so a fresh clone runs them on the corpus and CI on both.

A key both hold (Debian 12 kernels the sample also has) is taken from the sample once; the
corpus copy adds nothing a test could tell apart by key."""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests import corpus

SAMPLE = Path(__file__).resolve().parents[1].parent / "shared" / "btfhub-sample"
SUFFIX = ".btf.tar.xz"
_SETUP = ("run scripts/setup, which fetches the Debian kernel corpus into "
          f"{corpus.KERNELS} (../shared/btfhub-sample serves too where it is present)")


@dataclass(frozen=True, kw_only=True)
class RealKernel:
    key: str  # <id>/<version>/<arch>/<release>
    arch: str
    path: Path  # the btfhub-style .btf.tar.xz
    source: str  # "sample" or "corpus"
    num_types: int | None  # from the sample's MANIFEST.tsv; None for corpus kernels

    @property
    def rel(self) -> str:
        return self.key + SUFFIX


def _sample() -> list[RealKernel]:
    manifest = SAMPLE / "MANIFEST.tsv"
    if not manifest.is_file():
        return []
    with manifest.open(newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    return [RealKernel(key=r["path"].removesuffix(SUFFIX), arch=r["arch"], path=SAMPLE / r["path"],
                       source="sample", num_types=int(r["num_types"])) for r in rows]


def _corpus() -> list[RealKernel]:
    found = []
    for path in sorted(corpus.ARCHIVE.glob(f"*/*/*/*{SUFFIX}")):
        key = path.relative_to(corpus.ARCHIVE).as_posix().removesuffix(SUFFIX)
        found.append(RealKernel(key=key, arch=key.split("/")[2], path=path, source="corpus",
                                num_types=None))
    return found


def _all() -> list[RealKernel]:
    kernels = _sample()
    seen = {k.key for k in kernels}
    return kernels + [k for k in _corpus() if k.key not in seen]


KERNELS = _all()


def params(arch: str | None = None) -> list[object]:
    """KERNELS (of one arch) as pytest parameters named by key; one skipped parameter saying
    what to run when there are none."""
    chosen = [k for k in KERNELS if arch in (None, k.arch)]
    if chosen:
        return [pytest.param(k, id=k.key) for k in chosen]
    return [pytest.param(None, marks=pytest.mark.skip(
        reason=f"no real {arch or ''} kernel BTF: {_SETUP}"))]


def kernel(key: str) -> Path:
    """The .btf.tar.xz of the kernel called key (e.g. debian/12/x86_64/6.1.0-56-amd64, which
    the sample and the corpus both hold)."""
    for k in KERNELS:
        if k.key == key:
            return k.path
    pytest.skip(reason=f"real kernel {key} is absent: {_SETUP}")


def archive(dest: Path) -> Path:
    """A btfhub-layout archive at dest holding every real kernel, as symlinks to the files."""
    if not KERNELS:
        pytest.skip(reason=f"no real kernel BTF: {_SETUP}")
    for k in KERNELS:
        link = dest / k.rel
        link.parent.mkdir(parents=True, exist_ok=True)
        if not link.is_symlink():
            os.symlink(k.path, link)
    return dest


def renamed_member(raw: bytes, struct_name: str, old: str, new: str) -> bytes:
    """A real kernel BTF with one member of one struct renamed (the name appended to the
    strings, the member pointed at it; nothing else moves). 5.14 renamed task_struct's `state`
    to `__state`: renaming it back gives a kernel shaped, for that relocation, like the 4.x and
    5.x kernels no Debian package serves any more."""
    import struct as st

    from gobtfgen.btf import BTF, STRUCT

    btf = BTF(raw, wanted={struct_name})
    h = btf.header
    assert h.little_endian and len(raw) == h.hdr_len + h.str_off + h.str_len, \
        "a little-endian kernel BTF whose strings come last"
    (tid,) = [t for t in btf.by_essential_name(struct_name) if btf.kind(t) == STRUCT]
    (index,) = [i for i, m in enumerate(btf.members(tid)) if btf.str_at(m[0]) == old]
    blob = bytearray(raw)
    new_off = h.str_len
    blob += new.encode() + b"\0"
    st.pack_into("<I", blob, 20, h.str_len + len(new) + 1)  # str_len in the header
    member = h.hdr_len + h.type_off + 4 * btf.offsets[tid] + 12 + 12 * index
    st.pack_into("<I", blob, member, new_off)
    return bytes(blob)
