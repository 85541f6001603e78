"""CO-RE test objects compiled from tests/bpf/*.c by clang during the test run.

    from tests.bpfobjs import bpf_objects   # a session fixture: dict name -> Path
    objs = build_objects(tmp_dir)           # or build them yourself

Names: "fields" (every field relocation kind, bitfields, arrays, anonymous members, flavours),
"types" (type and enum-value relocations), "matches" (type_matches), "net" (a second object
sharing types with "fields"), "synth" (targets of the synthetic kernels in the tests),
"tracer" (a typical tracer probing enum bpf_func_id), "fields_eb" (fields.c compiled
big-endian), "execsnoop" (a tracer with one guarded read of a field no kernel has),
"kprobe_x86" (reads x86 pt_regs registers), "noreloc" (.BTF.ext but no CO-RE relocation).
The sources carry their own struct definitions with preserve_access_index, so
nothing depends on the host kernel or vmlinux.h.
"""

from __future__ import annotations

import shutil
import struct
import subprocess
import threading
from pathlib import Path

import pytest

SOURCES = Path(__file__).resolve().parent / "bpf"
OBJECTS = ("fields", "types", "matches", "net", "synth", "tracer", "execsnoop",
           "kprobe_x86", "noreloc")
# Objects whose TYPE_EXISTS relocations are rewritten to TYPE_MATCHES (see matches.c).
MATCHES_FROM_EXISTS = frozenset({"matches"})

_lock = threading.Lock()
_built: dict[Path, dict[str, Path]] = {}


def clang_or_skip() -> str:
    clang = shutil.which("clang")
    if not clang:
        pytest.skip(reason="clang is not installed; apt-get install clang llvm to build the CO-RE "
                    "test objects")
    if not (Path("/usr/include/bpf/bpf_helpers.h").exists()):
        pytest.skip(reason="libbpf headers are missing; apt-get install libbpf-dev to build "
                           "the CO-RE "
                    "test objects")
    return clang


def rewrite_relo_kind(path: Path, old: int, new: int) -> int:
    """Rewrite the kind of every CO-RE record of kind `old` in place; returns how many."""
    from elftools.elf.elffile import ELFFile

    data = bytearray(path.read_bytes())
    with open(path, "rb") as f:
        elf = ELFFile(f)
        sec = elf.get_section_by_name(".BTF.ext")
        assert sec is not None, f"{path} has no .BTF.ext"
        base = sec["sh_offset"]
        order = "<" if elf.little_endian else ">"
    hdr_len = struct.unpack_from(order + "I", data, base + 4)[0]
    core_off, core_len = struct.unpack_from(order + "II", data, base + 24)
    pos = base + hdr_len + core_off
    end = pos + core_len
    rec_size = struct.unpack_from(order + "I", data, pos)[0]
    pos += 4
    count = 0
    while pos < end:
        _, num = struct.unpack_from(order + "II", data, pos)
        pos += 8
        for _ in range(num):
            if struct.unpack_from(order + "I", data, pos + 12)[0] == old:
                struct.pack_into(order + "I", data, pos + 12, new)
                count += 1
            pos += rec_size
    path.write_bytes(bytes(data))
    return count


def build_objects(out_dir: Path) -> dict[str, Path]:
    """Compile every test object into out_dir (once per directory per process)."""
    out_dir = Path(out_dir)
    with _lock:
        if out_dir in _built:
            return _built[out_dir]
        clang = clang_or_skip()
        out_dir.mkdir(parents=True, exist_ok=True)
        jobs: dict[str, tuple[subprocess.Popen[str], Path]] = {}
        targets = [(name, name, "bpfel") for name in OBJECTS] + [("fields_eb", "fields", "bpfeb")]
        for key, src, target in targets:
            out = out_dir / f"{key}.o"
            cmd = [clang, "-g", "-O2", "-target", target, "-D__TARGET_ARCH_x86", "-c",
                   str(SOURCES / f"{src}.c"), "-o", str(out)]
            jobs[key] = (subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                          text=True), out)
        result: dict[str, Path] = {}
        for key, (proc, out) in jobs.items():
            _, err = proc.communicate()
            if proc.returncode != 0:
                raise RuntimeError(f"clang failed on {key}: {err}")
            result[key] = out
        for key in MATCHES_FROM_EXISTS:
            from gobtfgen.btf.ext import TYPE_EXISTS, TYPE_MATCHES

            assert rewrite_relo_kind(result[key], TYPE_EXISTS, TYPE_MATCHES) > 0
        _built[out_dir] = result
        return result


@pytest.fixture(scope="session")
def bpf_objects(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The compiled test objects (a session fixture; import it into a test module)."""
    return build_objects(tmp_path_factory.getbasetemp() / "gobtfgen-bpf-objects")


def bpftool_or_skip() -> str:
    exe = shutil.which("bpftool") or ("/usr/sbin/bpftool" if Path("/usr/sbin/bpftool").exists()
                                      else None)
    if not exe:
        pytest.skip(reason="bpftool is not installed; apt-get install bpftool to compare "
                           "against it")
    return exe


def run_bpftool_min(kernel: Path, out: Path, objects: list[Path]) -> tuple[bytes | None, str]:
    """bpftool gen min_core_btf: (output bytes or None on failure, stderr)."""
    proc = subprocess.run([bpftool_or_skip(), "gen", "min_core_btf", str(kernel), str(out),
                           *map(str, objects)], capture_output=True, text=True)
    if proc.returncode != 0:
        return None, proc.stderr
    return out.read_bytes(), proc.stderr
