"""`generate --format tar.gz,ld` over the sample archive, read back by a loader that does what
bcc's libbpf-tools and eunomia's bpf-compatible do (tests/ctest/targz_loader.c): the tar.gz
linked with `ld -r -b binary`, inflated with zlib, the member looked up by its exact path
`./<id>/<version>/<arch>/<release>.btf`. Every embedded kernel must be found, with the very
bytes the manifest records."""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from gobtfgen.targets import ld, targz
from gobtfgen.write import is_ours
from tests import realkernels
from tests.conftest import FIXTURES, REPO, compile_bpf, need

pytestmark = pytest.mark.tools


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory, real_archive: Path) -> Path:
    need("bpftool")
    if not Path("/usr/include/bpf/bpf_helpers.h").exists():
        pytest.skip(reason="libbpf headers are missing; apt-get install libbpf-dev")
    work = tmp_path_factory.mktemp("targz")
    obj = compile_bpf(FIXTURES / "probe.bpf.c", work / "probe.o", "VARIANT=0")
    out = work / "out"
    proc = subprocess.run([sys.executable, "-m", "gobtfgen", "generate", "--archive",
                           str(real_archive), "--object", str(obj), "--output-dir", str(out),
                           "--lang", "c", "--format", "tar.gz,ld", "--jobs", "2",
                           "--cache-dir", str(work / "cache")],
                          cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    return out


def test_outputs_are_only_the_archive_and_its_object(generated: Path) -> None:
    names = sorted(p.name for p in generated.iterdir())
    assert names == ["Makefile.btfgen", "btfgen_kernels.txt", "btfgen_manifest.json",
                     targz.TARGZ_FILE, ld.LD_FILE]
    for name in (targz.TARGZ_FILE, ld.LD_FILE):
        assert is_ours(generated / name), name
    assert "--lang c --format tar.gz,ld" in (generated / "Makefile.btfgen").read_text()


def test_tar_members_are_the_btfhub_paths(generated: Path, real_archive: Path) -> None:
    manifest = json.loads((generated / "btfgen_manifest.json").read_text())
    embedded = {k["key"]: k["btf_sha256"] for k in manifest["kernels"] if k["btf_sha256"]}
    raw = (generated / targz.TARGZ_FILE).read_bytes()
    with tarfile.open(fileobj=io.BytesIO(raw), mode="r:gz") as tar:
        members = {m.name: tar.extractfile(m).read() for m in tar.getmembers()}  # type: ignore[union-attr]
    assert set(members) == {f"./{k}.btf" for k in embedded}
    for key, sha in embedded.items():
        assert hashlib.sha256(members[f"./{key}.btf"]).hexdigest() == sha
    on_disk = {str(p.relative_to(real_archive))[:-len(".btf.tar.xz")]
               for p in real_archive.glob("*/*/*/*.btf.tar.xz")}
    assert set(embedded) == on_disk, sorted(on_disk - set(embedded))


def test_bcc_style_loader_finds_every_kernel(generated: Path, tmp_path: Path) -> None:
    gcc = need("gcc")
    loader = tmp_path / "targz_loader"
    src = Path(__file__).resolve().parent / "ctest" / "targz_loader.c"
    proc = subprocess.run([gcc, "-Wall", "-Wextra", "-Werror", "-O1", str(src),
                           str(generated / ld.LD_FILE), "-o", str(loader), "-lz"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    manifest = json.loads((generated / "btfgen_manifest.json").read_text())
    found = 0
    for kernel in manifest["kernels"]:
        if not kernel["btf_sha256"]:
            continue
        out = tmp_path / "found.btf"
        run = subprocess.run([str(loader), *kernel["key"].split("/"), str(out)],
                             capture_output=True, text=True, timeout=30)
        assert run.returncode == 0, (kernel["key"], run.stderr)
        assert hashlib.sha256(out.read_bytes()).hexdigest() == kernel["btf_sha256"]
        found += 1
    # Every real kernel of this run (the sample's 45 where present, the corpus's always).
    assert found == len(manifest["kernels"]) == len(realkernels.KERNELS)
    # And a kernel the archive does not hold is not found.
    run = subprocess.run([str(loader), "ubuntu", "22.04", "x86_64", "5.15.0-1-generic",
                          str(tmp_path / "x")], capture_output=True, text=True, timeout=30)
    assert run.returncode == 1 and "not in the archive" in run.stderr


def test_same_inputs_same_bytes(generated: Path, tmp_path: Path) -> None:
    again = tmp_path / "again"
    shutil.copytree(generated, again)
    manifest = json.loads((generated / "btfgen_manifest.json").read_text())
    entries = {}
    with tarfile.open(generated / targz.TARGZ_FILE, mode="r:gz") as tar:
        for m in tar.getmembers():
            entries[m.name[2:-4]] = tar.extractfile(m).read()  # type: ignore[union-attr]
    rebuilt, problems = targz.targz(entries)
    assert not problems and len(entries) == len(manifest["kernels"])
    assert rebuilt == (generated / targz.TARGZ_FILE).read_bytes()
    assert ld.ld_object(rebuilt) == (generated / ld.LD_FILE).read_bytes()
