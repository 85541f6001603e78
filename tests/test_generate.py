"""gobtfgen generate end to end with the real bpftool, clang-built objects and real kernels."""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gobtfgen import cli, pack
from gobtfgen.archive import read_kernel_btf, scan_archive
from tests.btfdata import add_kernel
from tests.conftest import REPO, need

pytestmark = pytest.mark.tools


@pytest.fixture(scope="module")
def bpftool() -> str:
    return need("bpftool")


def counting_bpftool(tmp_path: Path, real: str, sleep: float = 0.0) -> tuple[Path, Path]:
    """A bpftool that records each `gen` call in a file, then runs the real one."""
    log = tmp_path / "bpftool-calls"
    shim = tmp_path / "bpftool"
    shim.write_text(f"#!/bin/sh\nif [ \"$1\" = gen ]; then echo call >> '{log}'; "
                    f"sleep {sleep}; fi\nexec '{real}' \"$@\"\n")
    shim.chmod(0o755)
    return shim, log


def calls(log: Path) -> int:
    return len(log.read_text().splitlines()) if log.exists() else 0


def generate(*args: str | Path) -> int:
    return cli.main(["generate", *map(str, args)])


def snapshot(directory: Path) -> dict[str, tuple[int, int, bytes]]:
    return {p.name: (p.stat().st_ino, p.stat().st_mtime_ns, p.read_bytes())
            for p in sorted(directory.iterdir())}


READBACK_TEST = """package btfgen

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Writes every embedded kernel's BTF, as the generated code reads it back, to $READBACK_DIR.
func TestReadback(t *testing.T) {
	keys, err := BTFGenKeys()
	if err != nil {
		t.Fatal(err)
	}
	if len(keys) == 0 {
		t.Fatal("no keys")
	}
	for _, key := range keys {
		raw, err := BTFGenRaw(key)
		if err != nil {
			t.Fatal(key, err)
		}
		name := filepath.Join(os.Getenv("READBACK_DIR"), strings.ReplaceAll(key, "/", "_"))
		if err := os.WriteFile(name, raw, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}
"""


def go_readback(out: Path, dest: Path, goarch: str) -> dict[str, bytes]:
    """Every kernel's BTF read back through the generated Go code (GOARCH goarch)."""
    from tests.gomod import make_module, run_go

    if not (out / "go.mod").exists():
        make_module(out, files={"readback_test.go": READBACK_TEST})
    dest.mkdir()
    env = {"READBACK_DIR": str(dest), "GOARCH": goarch}
    args = ["test", "-count=1", "-run", "TestReadback", "."]
    if goarch == "arm64":
        args[1:1] = ["-exec", "qemu-aarch64"]
    run_go(args, cwd=out, env=env)
    return {p.name: p.read_bytes() for p in dest.iterdir()}


def test_every_sample_kernel_matches_bpftool(tmp_path: Path, real_archive: Path,
                                             probe_objects: dict[str, Path], bpftool: str,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    from tests.gomod import find_go

    out = tmp_path / "out"
    obj = probe_objects["base"]
    assert generate("--archive", real_archive, "--object", obj, "--output-dir", out,
                    "--cache-dir", tmp_path / "cache", "--minimizer", "bpftool",
                    "--bpftool", bpftool, "--pkg", "btfgen") == 0
    err = capsys.readouterr().err
    kernels, _ = scan_archive(real_archive, ["x86_64", "arm64"])
    assert f"{len(kernels)} kernels: {len(kernels)} minimized" in err
    payloads = {}
    for arch in ("x86_64", "arm64"):
        got_arch, entries = pack.unpack((out / f"btfgen_{arch}.payload").read_bytes())
        assert got_arch == arch
        payloads.update(entries)
    assert sorted(payloads) == sorted(k.key for k in kernels)
    # Each payload entry is byte for byte what bpftool writes for that kernel on its own.
    for kernel in kernels:
        raw = tmp_path / "raw.btf"
        raw.write_bytes(read_kernel_btf(kernel.path))
        subprocess.run([bpftool, "gen", "min_core_btf", str(raw), str(tmp_path / "min.btf"),
                        str(obj)], check=True, capture_output=True)
        assert payloads[kernel.key] == (tmp_path / "min.btf").read_bytes(), kernel.key
    # And the generated Go code reads back exactly those bytes, for each arch on its GOARCH.
    if find_go() is None:
        pytest.skip(reason="go not found: install Go to check the Go side reads back bpftool's "
                           "bytes")
    goarches = ["amd64"] + (["arm64"] if shutil.which("qemu-aarch64") else [])
    readback: dict[str, bytes] = {}
    for goarch in goarches:
        readback.update(go_readback(out, tmp_path / f"readback-{goarch}", goarch))
    want = {k.key.replace("/", "_"): payloads[k.key] for k in kernels
            if k.arch in [{"amd64": "x86_64", "arm64": "arm64"}[g] for g in goarches]}
    assert readback == want
    assert len(readback) == len(kernels) or "arm64" not in goarches
    manifest = (out / "btfgen_manifest.json").read_text()
    assert '"generator": "gobtfgen"' in manifest and '"status": "embedded"' in manifest


def test_cache_second_run_and_code_edits_reuse_everything(
        tmp_path: Path, real_archive: Path, probe_objects: dict[str, Path], bpftool: str,
        capsys: pytest.CaptureFixture[str]) -> None:
    shim, log = counting_bpftool(tmp_path, bpftool)
    out, cache = tmp_path / "out", tmp_path / "cache"
    obj = tmp_path / "probe_bpfel.o"  # one path whose content changes, as in a real project
    shutil.copy(probe_objects["base"], obj)
    args = ("--archive", real_archive, "--include", "debian/12", "--object", obj,
            "--output-dir", out, "--cache-dir", cache, "--minimizer", "bpftool", "--bpftool", shim)
    n = len(scan_archive(real_archive, ["x86_64", "arm64"], ["debian/12"])[0])

    assert generate(*args) == 0
    assert calls(log) == n
    before = snapshot(out)

    assert generate(*args) == 0  # nothing changed: no minimizer, no file rewritten
    assert calls(log) == n
    assert snapshot(out) == before

    shutil.copy(probe_objects["code"], obj)  # code edited, relocations unchanged
    assert generate(*args) == 0
    assert calls(log) == n
    assert snapshot(out) == before

    shutil.copy(probe_objects["relocs"], obj)  # a relocation added: every kernel redone
    assert generate(*args) == 0
    assert calls(log) == 2 * n
    assert "from cache" in capsys.readouterr().err
    after = snapshot(out)
    assert after["btfgen_x86_64.payload"] != before["btfgen_x86_64.payload"]


def test_damaged_kernel_is_a_problem_not_a_crash(tmp_path: Path, probe_objects: dict[str, Path],
                                                 bpftool: str,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    archive = tmp_path / "archive"
    vmlinux = Path("/sys/kernel/btf/vmlinux")
    if not vmlinux.exists():
        pytest.skip(reason="needs /sys/kernel/btf/vmlinux as a real kernel BTF to minimize")
    add_kernel(archive, "debian/12/x86_64/good", vmlinux.read_bytes())
    bad = add_kernel(archive, "debian/12/x86_64/bad", content=b"\xfd7zXZ\x00 truncated")
    args = ["--archive", archive, "--object", probe_objects["base"], "--output-dir",
            tmp_path / "out", "--cache-dir", tmp_path / "cache", "--bpftool", bpftool]
    assert generate(*args) == 0
    err = capsys.readouterr().err
    assert f"debian/12/x86_64/bad: {bad}: " in err and "--exclude" in err
    assert "1 minimized" in err and "1 failed" in err
    _, entries = pack.unpack((tmp_path / "out" / "btfgen_x86_64.payload").read_bytes())
    assert list(entries) == ["debian/12/x86_64/good"]
    assert generate(*args, "--strict") == 1


def test_payload_records_the_full_btf_checksum(tmp_path: Path, probe_objects: dict[str, Path],
                                               bpftool: str) -> None:
    """The Go payload's trailer holds the size and sha256 of each kernel's full BTF (what
    BTFOptions.PreferEmbedded compares /sys/kernel/btf/vmlinux with), from a cold run, from a
    run that takes every minimized BTF from the cache, and from one whose relocations changed
    (minimized again from the cache's raw BTF, the checksum read back, not recomputed)."""
    from gobtfgen.targets import go

    vmlinux = Path("/sys/kernel/btf/vmlinux")
    if not vmlinux.exists():
        pytest.skip(reason="needs /sys/kernel/btf/vmlinux as a real kernel BTF to minimize")
    full = vmlinux.read_bytes()
    archive = tmp_path / "archive"
    add_kernel(archive, "debian/12/x86_64/one", full)
    # The trailer keeps the first 16 bytes of the sha256 (docs/payload-format.md).
    want = {"debian/12/x86_64/one": f"{len(full)}:{hashlib.sha256(full).hexdigest()[:32]}"}
    for out, obj in (("cold", "base"), ("cached", "base"), ("relocs", "relocs")):
        assert generate("--archive", archive, "--object", probe_objects[obj], "--output-dir",
                        tmp_path / out, "--cache-dir", tmp_path / "cache",
                        "--bpftool", bpftool) == 0
        payload = (tmp_path / out / "btfgen_x86_64.payload").read_bytes()
        assert go.parse_fullsum_trailer(payload) == want, out
        _, entries = pack.unpack(payload)  # the payload itself reads as before
        assert list(entries) == list(want)


def test_nothing_usable_writes_nothing(tmp_path: Path, probe_objects: dict[str, Path],
                                       bpftool: str, capsys: pytest.CaptureFixture[str]) -> None:
    archive = tmp_path / "archive"
    add_kernel(archive, "debian/12/x86_64/bad", content=b"not xz")
    out = tmp_path / "out"
    assert generate("--archive", archive, "--object", probe_objects["base"], "--output-dir", out,
                    "--cache-dir", tmp_path / "cache", "--bpftool", bpftool) == 1
    assert "no kernel could be minimized, nothing written" in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.parametrize("case", ["missing", "not-executable", "too-old"])
def test_bad_bpftool(tmp_path: Path, real_archive: Path, probe_objects: dict[str, Path],
                     case: str, capsys: pytest.CaptureFixture[str]) -> None:
    tool = tmp_path / "bpftool"
    if case == "not-executable":
        tool.write_text("")
    elif case == "too-old":  # what a bpftool from Linux 5.10 answers
        tool.write_text("#!/bin/sh\necho 'bpftool v5.10.0'\necho 'features: libbfd'\n")
        tool.chmod(0o755)
    code = generate("--archive", real_archive, "--object", probe_objects["base"],
                    "--output-dir", tmp_path / "out", "--cache-dir", tmp_path / "c",
                    "--minimizer", "bpftool", "--bpftool", tool)
    err = capsys.readouterr().err
    assert code == 1 and err.count("\n") == 1, err
    assert "apt-get install bpftool" in err or "upgrade it" in err
    assert not (tmp_path / "out").exists()


def test_bpftool_not_on_path(tmp_path: Path, real_archive: Path,
                             probe_objects: dict[str, Path], monkeypatch: pytest.MonkeyPatch,
                             capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    code = generate("--archive", real_archive, "--object", probe_objects["base"],
                    "--output-dir", tmp_path / "out", "--cache-dir", tmp_path / "c",
                    "--minimizer", "bpftool")
    err = capsys.readouterr().err
    assert code == 1
    assert err.strip() == ("gobtfgen: error: bpftool not found on PATH; install it "
                           "(Debian/Ubuntu: apt-get install bpftool) or pass --bpftool PATH")


def test_default_minimizer_needs_no_bpftool(tmp_path: Path, real_archive: Path,
                                            probe_objects: dict[str, Path],
                                            monkeypatch: pytest.MonkeyPatch,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    """The built-in minimizer is the default: no bpftool anywhere, and the run succeeds."""
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.delenv("GOBTFGEN_MINIMIZER", raising=False)
    out = tmp_path / "out"
    code = generate("--archive", real_archive, "--include", "debian/12",
                    "--object", probe_objects["base"], "--output-dir", out,
                    "--cache-dir", tmp_path / "c", "--bpftool", tmp_path / "no-such-bpftool")
    err = capsys.readouterr().err
    assert code == 0, err
    n = len(scan_archive(real_archive, ["x86_64", "arm64"], ["debian/12"])[0])
    assert f"{n} kernels: {n} minimized" in err and "(python 3)" in err
    assert '"minimizer": "python 3"' in (out / "btfgen_manifest.json").read_text()


def test_bad_objects(tmp_path: Path, real_archive: Path, probe_objects: dict[str, Path],
                     bpftool: str, capsys: pytest.CaptureFixture[str]) -> None:
    text = tmp_path / "notes.o"
    text.write_text("hello\n")
    base = ("--archive", real_archive, "--output-dir", tmp_path / "out", "--cache-dir",
            tmp_path / "c", "--bpftool", bpftool)
    assert generate(*base, "--object", probe_objects["base"], "--object", text) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{text}: not an ELF file" in err
    assert generate(*base, "--object", tmp_path / "missing.o") == 1
    assert "no such object file" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_ctrl_c_leaves_outputs_as_they_were(tmp_path: Path, real_archive: Path,
                                            probe_objects: dict[str, Path], bpftool: str) -> None:
    out, cache = tmp_path / "out", tmp_path / "cache"
    env = {**os.environ,
           "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    base = [sys.executable, "-m", "gobtfgen", "generate", "--archive", str(real_archive),
            "--output-dir", str(out), "--cache-dir", str(cache), "--include", "debian"]
    base += ["--minimizer", "bpftool"]  # a slow bpftool shim gives time to interrupt
    subprocess.run([*base, "--object", str(probe_objects["base"]), "--bpftool", bpftool],
                   check=True, env=env, capture_output=True)
    before = snapshot(out)
    shim, log = counting_bpftool(tmp_path, bpftool, sleep=0.2)
    proc = subprocess.Popen([*base, "--object", str(probe_objects["relocs"]), "--bpftool",
                             str(shim), "--jobs", "2"], env=env, stderr=subprocess.PIPE,
                            text=True)
    deadline = time.monotonic() + 60
    while calls(log) < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "interrupted" in err and "Traceback" not in err
    assert snapshot(out) == before
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temp files left
    # The cache holds only whole entries, and the next run completes.
    assert not list(cache.rglob("*.tmp"))
    done = subprocess.run([*base, "--object", str(probe_objects["relocs"]), "--bpftool",
                           bpftool], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert snapshot(out) != before


def test_unwritable_output_dir(tmp_path: Path, real_archive: Path,
                               probe_objects: dict[str, Path], bpftool: str,
                               capsys: pytest.CaptureFixture[str]) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the output directory should be\n")
    code = generate("--archive", real_archive, "--include", "debian/12/x86_64/6.1.0-56-amd64",
                    "--object", probe_objects["base"], "--output-dir", blocker / "out",
                    "--cache-dir", tmp_path / "cache", "--bpftool", bpftool)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1
    assert err[-1].startswith(f"gobtfgen: error: cannot create output directory {blocker}/out")
    assert err[-1].endswith("pass a writable --output-dir")


def test_results_hold_one_copy_of_what_they_share(tmp_path: Path, real_archive: Path,
                                                  probe_objects: dict[str, Path]) -> None:
    """What the main process keeps per kernel until the outputs are written stays small (its
    peak memory should not follow the archive's size): the plan's own Kernel objects, not the
    copies the workers send back; one bytes object per distinct minimized BTF; no file stamps
    (the memo has them, and a re-run finds every kernel's hash there)."""
    from gobtfgen import pipeline
    from gobtfgen.cache import Cache

    options = pipeline.GenerateOptions(
        objects=(probe_objects["base"],), archive=real_archive, archive_arg=str(real_archive),
        arches=("x86_64", "arm64"), output_dir=tmp_path / "out", cache_dir=tmp_path / "cache",
        jobs=2, minimizer="python")
    memo = Cache(options.cache_dir).memo()
    p = pipeline.plan(options, memo)
    results, _ = pipeline.minimize_all(p, options, memo)
    assert sorted(r.kernel.key for r in results) == sorted(k.key for k in p.kernels)
    planned = {id(k) for k in p.kernels}
    assert all(id(r.kernel) in planned for r in results)
    assert all(r.stamp is None for r in results)
    usable = [r.btf for r in results if r.btf]
    assert usable and len({id(b) for b in usable}) == len(set(usable))
    again = Cache(options.cache_dir).memo()
    assert all(again.lookup(k.path) for k in p.kernels if k.arch in ("x86_64", "arm64"))
