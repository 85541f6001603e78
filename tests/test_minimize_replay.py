"""gobtfgen minimize's kept results (gobtfgen.minimize.replay): a repeated command is answered
from <cache>/minimize/ with the bytes a fresh run writes, and never for inputs that changed."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import pytest

from gobtfgen import btf as B
from gobtfgen import cli
from gobtfgen.archive import read_kernel_btf
from gobtfgen.btf.native import native
from gobtfgen.commands.minimize_fast import display_path, parse_simple, replay
from gobtfgen.minimize import replay as kept
from tests import realkernels
from tests.bpfobjs import bpf_objects
from tests.conftest import FIXTURES, REPO, compile_bpf

__all__ = ["bpf_objects"]

pytestmark = pytest.mark.tools

KEY = "debian/12/x86_64/6.1.0-56-amd64"


@pytest.fixture
def kernel(tmp_path: Path) -> Path:
    raw = tmp_path / "kernel.btf"
    raw.write_bytes(read_kernel_btf(realkernels.kernel(KEY)))
    return raw


def fresh(tmp_path: Path, kernel: Path, objects: list[Path], name: str,
          monkeypatch: pytest.MonkeyPatch) -> bytes:
    """What the ordinary path (argparse, gobtfgen.commands.minimize) writes with no cache."""
    with monkeypatch.context() as m:
        m.setenv("GOBTFGEN_CACHE_DIR", "")
        out = tmp_path / f"{name}.fresh.btf"
        assert cli.main(["minimize", str(kernel), str(out), *map(str, objects)],
                        replay=False) == 0
    return out.read_bytes()


def argv(kernel: Path, out: Path, objects: Sequence[str | Path], *extra: str) -> list[str]:
    return ["minimize", *extra, str(kernel), str(out), *map(str, objects)]


def entries(cache: Path, suffix: str) -> list[Path]:
    return sorted((cache / "minimize").glob(f"*{suffix}"))


def stat_record(cache: Path, kind: str) -> Path:
    """The one .stat record of this kind ("kernel" or "object")."""
    (record,) = [p for p in entries(cache, kept.STAT_SUFFIX)
                 if p.read_text().split(" ")[2] == kind]
    return record


def trust_stat_records(cache: Path) -> None:
    """Rewrite the .stat records as if taken long after their files' last change (a test
    cannot wait out RACY_NS). Fields: magic, version, kind, dev, ino, size, mtime, ctime,
    recorded, value, path."""
    for record in entries(cache, kept.STAT_SUFFIX):
        fields = record.read_text().split(" ", 10)
        fields[8] = str(int(fields[7]) + kept.RACY_NS + 1)
        record.write_text(" ".join(fields))


def test_repeated_run_is_replayed_byte_for_byte(tmp_path: Path, kernel: Path,
                                               probe_objects: dict[str, Path],
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    cache = tmp_path / "cache"
    monkeypatch.setenv("GOBTFGEN_CACHE_DIR", str(cache))
    objs = [probe_objects["base"]]
    for minimizer in ("python", "python-compat"):
        first, again = tmp_path / f"{minimizer}.1.btf", tmp_path / f"{minimizer}.2.btf"
        assert replay(argv(kernel, first, objs, "--minimizer", minimizer)) is None
        assert cli.main(argv(kernel, first, objs, "--minimizer", minimizer)) == 0
        assert replay(argv(kernel, again, objs, "--minimizer", minimizer)) == 0
        assert again.read_bytes() == first.read_bytes()
        with monkeypatch.context() as m:
            m.setenv("GOBTFGEN_MINIMIZER", minimizer)
            assert fresh(tmp_path, kernel, objs, minimizer, m) == first.read_bytes()
    assert len(entries(cache, kept.RES_SUFFIX)) == 2  # one per minimizer
    # bpftool's own command line, options between the objects, is the same command.
    bpftool_line = tmp_path / "line.btf"
    assert replay(["gen", "min_core_btf", str(kernel), str(bpftool_line), "-d",
                   str(objs[0])]) == 0
    assert bpftool_line.read_bytes() == (tmp_path / "python.1.btf").read_bytes()


def test_a_changed_kernel_of_the_same_size_is_not_served(tmp_path: Path, kernel: Path,
                                                         probe_objects: dict[str, Path],
                                                         monkeypatch: pytest.MonkeyPatch
                                                         ) -> None:
    """The kernel file rewritten in place with the same size (task_struct.tgid moved): the
    next run, within the same timestamp tick or not, writes the new kernel's answer."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("GOBTFGEN_CACHE_DIR", str(cache))
    objs = [probe_objects["base"]]
    data = kernel.read_bytes()
    k = B.BTF(data, wanted={"task_struct"})
    (task,) = k.find_named("task_struct", [B.STRUCT])
    idx = [k.str_at(name) for name, _, _ in k.members(task)].index("tgid")
    at = k.header.hdr_len + k.header.type_off + 4 * (k.offsets[task] + 3 + 3 * idx + 2)
    moved = bytearray(data)
    moved[at:at + 4] = (int.from_bytes(data[at:at + 4], "little") + 64).to_bytes(4, "little")
    other = tmp_path / "other.btf"
    other.write_bytes(moved)
    want_old = fresh(tmp_path, kernel, objs, "old", monkeypatch)
    want_new = fresh(tmp_path, other, objs, "new", monkeypatch)
    assert want_old != want_new

    assert cli.main(argv(kernel, tmp_path / "a.btf", objs)) == 0
    kernel.write_bytes(moved)  # same inode, same size, likely the same timestamp tick
    assert cli.main(argv(kernel, tmp_path / "b.btf", objs)) == 0
    assert (tmp_path / "b.btf").read_bytes() == want_new

    # The worst case made certain: a record claiming the file's current stat with the old
    # kernel's hash, taken within RACY_NS of the file's change, is not trusted.
    record = stat_record(cache, "kernel")
    fields = record.read_text().split(" ", 10)
    st = kernel.stat()
    fields[3:9] = map(str, (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns,
                            st.st_ctime_ns + kept.RACY_NS // 2))
    fields[9] = kept.file_sha256(data)
    record.write_text(" ".join(fields))
    assert replay(argv(kernel, tmp_path / "c.btf", objs)) == 0
    assert (tmp_path / "c.btf").read_bytes() == want_new


def test_a_trusted_stat_record_skips_reading_the_kernel(tmp_path: Path, kernel: Path,
                                                        probe_objects: dict[str, Path],
                                                        monkeypatch: pytest.MonkeyPatch
                                                        ) -> None:
    cache = tmp_path / "cache"
    monkeypatch.setenv("GOBTFGEN_CACHE_DIR", str(cache))
    objs = [probe_objects["base"]]
    assert cli.main(argv(kernel, tmp_path / "a.btf", objs)) == 0

    def no_hashing(data: bytes) -> str:
        raise AssertionError("the kernel was hashed again")

    # Recorded right after the file was written: racy, so the kernel is hashed (and the
    # record taken again).
    with monkeypatch.context() as m:
        m.setattr(kept, "file_sha256", no_hashing)
        with pytest.raises(AssertionError, match="hashed again"):
            replay(argv(kernel, tmp_path / "b.btf", objs))
    trust_stat_records(cache)
    with monkeypatch.context() as m:
        m.setattr(kept, "file_sha256", no_hashing)
        assert replay(argv(kernel, tmp_path / "b.btf", objs)) == 0
    assert (tmp_path / "b.btf").read_bytes() == (tmp_path / "a.btf").read_bytes()
    # Touching the file (a new ctime) ends the trust.
    os.utime(kernel)
    with monkeypatch.context() as m:
        m.setattr(kept, "file_sha256", no_hashing)
        with pytest.raises(AssertionError, match="hashed again"):
            replay(argv(kernel, tmp_path / "c.btf", objs))


def test_objects_key_by_their_core_content(tmp_path: Path, kernel: Path,
                                           probe_objects: dict[str, Path],
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """A code-only edit (probe VARIANT=1) is the same entry; one more relocation (VARIANT=2)
    is not; the same object copied in place of another is looked up anew."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("GOBTFGEN_CACHE_DIR", str(cache))
    obj = tmp_path / "probe.o"
    obj.write_bytes(probe_objects["base"].read_bytes())
    assert cli.main(argv(kernel, tmp_path / "base.btf", [obj])) == 0
    obj.write_bytes(probe_objects["code"].read_bytes())
    assert replay(argv(kernel, tmp_path / "code.btf", [obj])) == 0
    assert (tmp_path / "code.btf").read_bytes() == fresh(tmp_path, kernel, [obj], "code",
                                                         monkeypatch)
    obj.write_bytes(probe_objects["relocs"].read_bytes())
    assert replay(argv(kernel, tmp_path / "relocs.btf", [obj])) is None
    assert cli.main(argv(kernel, tmp_path / "relocs.btf", [obj])) == 0
    want = fresh(tmp_path, kernel, [obj], "relocs", monkeypatch)
    assert (tmp_path / "relocs.btf").read_bytes() == want
    assert want != (tmp_path / "base.btf").read_bytes()
    assert replay(argv(kernel, tmp_path / "relocs2.btf", [obj])) == 0
    assert (tmp_path / "relocs2.btf").read_bytes() == want


def test_damaged_entries_are_ignored_and_rewritten(tmp_path: Path, kernel: Path,
                                                   probe_objects: dict[str, Path],
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    cache = tmp_path / "cache"
    monkeypatch.setenv("GOBTFGEN_CACHE_DIR", str(cache))
    objs = [probe_objects["base"]]
    assert cli.main(argv(kernel, tmp_path / "a.btf", objs)) == 0
    want = (tmp_path / "a.btf").read_bytes()
    (res,) = entries(cache, kept.RES_SUFFIX)
    good = res.read_bytes()
    flipped = bytearray(good)
    flipped[-3] ^= 0x40
    for name, bad in (("flipped", bytes(flipped)), ("truncated", good[:-5]), ("empty", b""),
                      ("foreign", good[:8] + b"\0" * (len(good) - 8))):
        res.write_bytes(bad)
        assert replay(argv(kernel, tmp_path / f"{name}.btf", objs)) is None, name
        assert cli.main(argv(kernel, tmp_path / f"{name}.btf", objs)) == 0
        assert (tmp_path / f"{name}.btf").read_bytes() == want, name
        assert res.read_bytes() == good, name
    for kind in ("kernel", "object"):
        record = stat_record(cache, kind)
        record.write_text("gobtfgen-minimize-stat 2 garbage")
        assert replay(argv(kernel, tmp_path / f"stat-{kind}.btf", objs)) == 0  # read again
        assert (tmp_path / f"stat-{kind}.btf").read_bytes() == want
        assert record.read_text().startswith(f"gobtfgen-minimize-stat 2 {kind} ")
        assert len(record.read_text().split(" ")) == 11
    assert not list((cache / "minimize").glob(".*"))  # no temp file left behind


def test_notes_for_skipped_objects_are_replayed(tmp_path: Path, kernel: Path,
                                               bpf_objects: dict[str, Path],
                                               probe_objects: dict[str, Path],
                                               monkeypatch: pytest.MonkeyPatch,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    """Objects without CO-RE relocations (a map-only one, one without relocations) are
    skipped with a note; the replay prints the same notes, naming each object as the
    command's own note does (./ dropped, as pathlib does)."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("GOBTFGEN_CACHE_DIR", str(cache))
    maps = compile_bpf(FIXTURES / "maps_only.bpf.c", tmp_path / "maps.o")
    monkeypatch.chdir(tmp_path)
    objs = ["./maps.o", probe_objects["base"], bpf_objects["noreloc"]]
    assert cli.main(argv(kernel, tmp_path / "a.btf", objs)) == 0
    first = capsys.readouterr().err
    assert first.count("no CO-RE relocations") == 2 and "note: maps.o:" in first
    assert maps.is_file()
    assert replay(argv(kernel, tmp_path / "b.btf", objs)) == 0
    assert capsys.readouterr().err == first
    assert (tmp_path / "b.btf").read_bytes() == (tmp_path / "a.btf").read_bytes()
    for path in ("./a.o", "a//b.o", "/x/./y.o", "//net/o", "///r.o", "d/", ".", "a/../b.o"):
        assert display_path(path) == str(Path(path)), path


def test_what_is_not_replayed(tmp_path: Path, kernel: Path, probe_objects: dict[str, Path],
                              monkeypatch: pytest.MonkeyPatch) -> None:
    cache = tmp_path / "cache"
    obj = str(probe_objects["base"])
    # Command lines the fast path leaves to argparse.
    for line in (["minimize", "--help"], ["generate"], ["minimize", "in", "out"],
                 ["minimize", "--minimizer", "bpftool", "in", "out", obj],
                 ["minimize", "-B", "vmlinux", "in", "out", obj],
                 ["minimize", "--minimizer=python", "in", "out", obj],
                 ["--version", "minimize", "in", "out", obj]):
        assert parse_simple(line) is None, line
    assert parse_simple(["-v", "minimize", "-j", "in", "out", obj, "-p"]) is not None
    # No cache, and a minimizer whose output depends on the installed tool: nothing kept.
    monkeypatch.setenv("GOBTFGEN_CACHE_DIR", "")
    assert cli.main(argv(kernel, tmp_path / "a.btf", [Path(obj)])) == 0
    monkeypatch.setenv("GOBTFGEN_CACHE_DIR", str(cache))
    assert cli.main(argv(kernel, tmp_path / "b.btf", [Path(obj)], "--minimizer",
                         "bpftool")) == 0
    assert not (cache / "minimize").exists()
    # GOBTFGEN_VERIFY is part of the key.
    assert cli.main(argv(kernel, tmp_path / "c.btf", [Path(obj)])) == 0
    monkeypatch.setenv("GOBTFGEN_VERIFY", "1")
    assert replay(argv(kernel, tmp_path / "d.btf", [Path(obj)])) is None


def test_a_replay_imports_only_what_it_needs(tmp_path: Path, kernel: Path,
                                             probe_objects: dict[str, Path]) -> None:
    """Through `python -m gobtfgen`, a kept result is written without the CLI, argparse,
    dataclasses, typing, pathlib or hashlib (each costs a repeated command milliseconds
    that bpftool's whole process takes)."""
    cache = tmp_path / "cache"
    env = {**os.environ, "GOBTFGEN_CACHE_DIR": str(cache), "PYTHONPATH": str(REPO)}
    line = [sys.executable, "-X", "importtime", "-m", "gobtfgen",
            *argv(kernel, tmp_path / "a.btf", [probe_objects["base"]])]
    subprocess.run(line, env=env, check=True, capture_output=True)
    trust_stat_records(cache)
    proc = subprocess.run(line, env=env, check=True, capture_output=True, text=True)
    imported = {row.split("|")[-1].strip() for row in proc.stderr.splitlines()
                if row.startswith("import time:")}
    assert "gobtfgen.minimize.replay" in imported
    for heavy in ("gobtfgen.cli", "argparse", "dataclasses", "typing", "pathlib", "hashlib",
                  "gobtfgen.btf", "tempfile"):
        assert heavy not in imported, heavy
    assert (tmp_path / "a.btf").read_bytes() == fresh_bytes(kernel, probe_objects["base"],
                                                            tmp_path)


def fresh_bytes(kernel: Path, obj: Path, tmp_path: Path) -> bytes:
    out = tmp_path / "fresh.btf"
    env = {**os.environ, "GOBTFGEN_CACHE_DIR": "", "PYTHONPATH": str(REPO)}
    subprocess.run([sys.executable, "-m", "gobtfgen", "minimize", str(kernel), str(out),
                    str(obj)], env=env, check=True, capture_output=True)
    return out.read_bytes()


def test_a_cold_run_imports_only_the_minimizer(tmp_path: Path, kernel: Path,
                                               bpf_objects: dict[str, Path]) -> None:
    """A first run on a raw kernel BTF (empty cache) goes the fast path too: the same bytes
    as the ordinary path, its index and kept result written, and none of the CLI's imports."""
    cache = tmp_path / "cache"
    objs = [bpf_objects["tracer"], bpf_objects["fields"]]
    env = {**os.environ, "GOBTFGEN_CACHE_DIR": str(cache), "PYTHONPATH": str(REPO)}
    for minimizer in ("python", "python-compat"):
        out = tmp_path / f"{minimizer}.btf"
        proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "gobtfgen",
                               *argv(kernel, out, objs, "--minimizer", minimizer)],
                              env=env, check=True, capture_output=True, text=True)
        imported = {row.split("|")[-1].strip() for row in proc.stderr.splitlines()
                    if row.startswith("import time:")}
        assert "gobtfgen.minimize.python" in imported
        for heavy in ("gobtfgen.cli", "argparse", "dataclasses", "typing", "pathlib",
                      "tempfile", "gobtfgen.cache", "gobtfgen.archive", "gobtfgen.errors",
                      "subprocess", "json", "re"):
            assert heavy not in imported, (minimizer, heavy)
        ordinary = tmp_path / f"{minimizer}.ordinary.btf"
        assert cli.main(argv(kernel, ordinary, objs, "--minimizer", minimizer),
                        replay=False) == 0
        assert out.read_bytes() == ordinary.read_bytes(), minimizer
    assert len(entries(cache, kept.RES_SUFFIX)) == 2
    if native is not None:
        # As the console script runs it (runpy imports some of these for -m): nothing that
        # only the Python framing, name scan and index file use (array imports
        # collections.abc), and no hashlib where the compiled SHA-256 runs.
        script = "import sys; from gobtfgen.__main__ import main; sys.exit(main())"
        proc = subprocess.run([sys.executable, "-X", "importtime", "-c", script,
                               *argv(kernel, tmp_path / "script.btf", objs)],
                              env={**env, "GOBTFGEN_CACHE_DIR": str(tmp_path / "cache2")},
                              check=True, capture_output=True, text=True)
        imported = {row.split("|")[-1].strip() for row in proc.stderr.splitlines()
                    if row.startswith("import time:")}
        assert "gobtfgen.minimize.python" in imported
        light = ["array", "collections.abc", "bisect", "operator", "itertools", "zlib"]
        if native.sha256(b"") is not None:
            light.append("hashlib")
        assert not imported.intersection(light), imported.intersection(light)
    from gobtfgen.btf import index as btf_index

    assert len(list((cache / "raw").glob("*.idx"))) == (1 if btf_index.KEEP else 0)


def test_the_fast_path_keeps_the_index_where_the_cache_does(tmp_path: Path) -> None:
    from gobtfgen.cache import Cache

    sha = "ab" * 32
    assert kept.index_path(str(tmp_path), sha) == str(Cache(tmp_path).index_path(sha))


def test_interrupted_runs_leave_nothing_torn(tmp_path: Path, kernel: Path,
                                             probe_objects: dict[str, Path]) -> None:
    """SIGINT or SIGTERM at random points of cold and replayed runs: no traceback, no temp
    file in the output directory or the cache, and the output either as before or whole."""
    import random
    import signal

    rng = random.Random(20261202)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    out = out_dir / "min.btf"
    want = fresh_bytes(kernel, probe_objects["base"], tmp_path)
    codes = []
    for i in range(8):
        cache = tmp_path / f"cache{i // 2}"  # each cache cold once, then replayed
        before = out.read_bytes() if out.exists() else None
        proc = subprocess.Popen([sys.executable, "-m", "gobtfgen",
                                 *argv(kernel, out, [probe_objects["base"]])],
                                env={**env, "GOBTFGEN_CACHE_DIR": str(cache)},
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        time.sleep(rng.uniform(0.01, 0.09))
        proc.send_signal(signal.SIGINT if i % 3 else signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
        codes.append(proc.returncode)
        # A signal while Python itself starts (before its handlers, or in site and runpy)
        # kills it or ends in Python's own traceback, which names no gobtfgen file; one in
        # gobtfgen's code must end in its message and 130.
        assert "/gobtfgen/" not in err, err
        if "Traceback" not in err:
            assert proc.returncode in (0, 130, -signal.SIGTERM, -signal.SIGINT), (
                proc.returncode, err)
        assert not [p.name for p in out_dir.iterdir() if p.name.startswith(".")], i
        if cache.exists():
            assert not list(cache.rglob("*.tmp")), i
        assert (out.read_bytes() if out.exists() else None) in (before, want), i
    assert any(code == 130 for code in codes), codes


def test_the_light_sha256_is_hashlibs() -> None:
    import hashlib

    from gobtfgen.sha256 import sha256

    for data in (b"", b"abc", bytes(range(256)) * 4099):
        h = sha256(data[:7])
        h.update(data[7:])
        assert h.hexdigest() == hashlib.sha256(data).hexdigest()


def test_an_object_is_digested_once_per_content(tmp_path: Path, probe_objects: dict[str, Path],
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """store() reads every object again: the same bytes give the digest computed before
    without a second signature, other bytes a new one."""
    from gobtfgen import coresig

    calls: list[int] = []
    real = coresig.core_signature

    def counted(*args: object, **kwargs: object) -> tuple[int, str]:
        calls.append(1)
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(coresig, "core_signature", counted)
    monkeypatch.setattr(kept, "_DIGESTED", {})
    data = probe_objects["base"].read_bytes()
    first = kept.object_digest(data)
    assert first is not None and first != kept.SKIPPED
    assert kept.object_digest(bytes(data)) == first and len(calls) == 1
    other = probe_objects["relocs"].read_bytes()
    assert kept.object_digest(other) not in (None, first) and len(calls) == 2
    assert kept.object_digests([str(probe_objects["base"])]) == [first] and len(calls) == 2
