"""The per-kernel cache (gobtfgen/cache.py): compressed raw BTF entries, their checks, one size
limit with LRU eviction over every file under the root, and results that are the same whether a
kernel came from the cache or from the archive."""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

import pytest

from gobtfgen import cli, pipeline
from gobtfgen.archive import Kernel, read_kernel_btf
from gobtfgen.btf import index as btf_index
from gobtfgen.btf.ext import parse_object
from gobtfgen.cache import (
    DEFAULT_LIMIT,
    Cache,
    CachedKernel,
    RawEntry,
    StatMemo,
    minimize_key,
    parse_size,
)
from gobtfgen.minimize import builtin_identity
from gobtfgen.minimize.python import minimize_btf
from gobtfgen.objects import read_object, signature_of
from tests import realkernels


def _file(path: Path, size: int, used: float) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(os.urandom(size))
    os.utime(path, (used, used))
    return path


def _disk(path: Path) -> int:
    return path.stat().st_blocks * 512


def test_eviction_keeps_the_cache_under_its_limit_least_recently_used_first(
        tmp_path: Path) -> None:
    cache = Cache(tmp_path, limit=0)
    now = time.time()
    # Entries of every kind, and a file of a module this one does not know (say, a result
    # cache of `gobtfgen minimize`): the limit covers them all.
    files = [_file(tmp_path / "raw" / f"{n:064x}.zst", 40_000, now - 1000 + n) for n in range(6)]
    files.append(_file(tmp_path / "raw" / f"{7:064x}.idx", 8_000, now - 500))
    files.append(_file(tmp_path / "min" / "ab" / ("ab" * 32 + ".btf"), 3_000, now - 400))
    files.append(_file(tmp_path / "elsewhere" / "result.bin", 20_000, now - 300))
    files.append(_file(tmp_path / "filememo.json", 500, now - 10))
    lock = _file(tmp_path / "locks" / "ab.lock", 0, now - 5000)
    fresh_tmp = _file(tmp_path / "raw" / ".x.zst.123.tmp", 40_000, now - 60)
    stale_tmp = _file(tmp_path / "raw" / ".y.zst.456.tmp", 40_000, now - 7200)
    old_raw = _file(tmp_path / "raw" / f"{9:064x}.btf", 40_000, now)  # before .zst entries
    disk = {f: _disk(f) for f in files}
    total = sum(disk.values())
    assert cache.usage() == total
    assert not stale_tmp.exists()  # a killed writer's leftover goes on the first walk
    assert not old_raw.exists()  # so does an entry of the old uncompressed format
    assert fresh_tmp.exists()  # a writer may be on it

    cap = total - disk[files[0]] - disk[files[1]] - 1  # the two oldest and one more must go
    freed = cache.evict(limit=cap)
    gone = [f for f in files if not f.exists()]
    assert gone == files[:3]
    assert freed == sum(disk[f] for f in files[:3])
    assert cache.usage() <= cap
    assert lock.exists() and fresh_tmp.exists()

    # A read marks an entry used: the oldest raw entry left is then the last to go.
    sha = f"{3:064x}"
    files[3].write_bytes(RawEntry.encode(sha, b"x" * 1000))
    os.utime(files[3], (now - 2000, now - 2000))
    entry = cache.get_kernel(sha)
    assert entry is not None and entry.btf == b"x" * 1000 and not entry.stripped
    cache.evict(limit=_disk(files[3]))
    assert files[3].exists()
    assert [f for f in files[4:] if f.exists()] == []
    cache.evict(limit=0)
    assert not files[3].exists() and lock.exists()


def test_sizes_and_the_default_limit() -> None:
    assert parse_size("10G") == DEFAULT_LIMIT == 10 << 30
    assert parse_size("500M") == 500 << 20
    assert parse_size("1.5GiB") == 3 << 29
    assert parse_size("4096") == 4096
    assert parse_size("0") == 0
    for bad in ("", "ten", "10X", "-1G"):
        with pytest.raises(ValueError, match="is not a size"):
            parse_size(bad)


def test_cache_limit_flag_and_env_are_in_help_and_checked(
        capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(SystemExit):
        cli.main(["generate", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--cache-limit SIZE" in text and "env: GOBTFGEN_CACHE_LIMIT" in text
    assert "default: 10G" in text
    monkeypatch.setenv("GOBTFGEN_CACHE_LIMIT", "lots")
    assert cli.main(["generate", "--archive", "/nonexistent", "--object", "/nonexistent"]) == 2
    assert "GOBTFGEN_CACHE_LIMIT" in capsys.readouterr().err


def _kernel_sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("damage", ["flipped", "truncated", "foreign", "older format", "empty"])
def test_a_damaged_raw_entry_is_rebuilt_never_used(tmp_path: Path, damage: str) -> None:
    path = realkernels.kernel("debian/12/x86_64/6.1.0-56-amd64")
    raw = read_kernel_btf(path)
    sha = _kernel_sha(path)
    cache = Cache(tmp_path)
    entry = cache.put_kernel(sha, raw)
    assert cache.get_kernel(sha) == CachedKernel(btf=raw, stripped=False)
    blob = entry.read_bytes()
    assert len(blob) < len(raw) * 0.4  # compressed
    if damage == "flipped":
        bad = bytearray(blob)
        bad[len(bad) // 2] ^= 0x10
        entry.write_bytes(bytes(bad))
    elif damage == "truncated":
        entry.write_bytes(blob[:len(blob) // 3])
    elif damage == "foreign":  # another kernel's sound entry under this name
        entry.write_bytes(RawEntry.encode("0" * 64, raw))
    elif damage == "older format":  # the raw BTF as cache versions before this one kept it
        entry.write_bytes(raw)
    else:
        entry.write_bytes(b"")
    assert cache.get_kernel(sha) is None
    assert not entry.exists()  # deleted, so the next writer puts a sound one there


def _task(kernel: Kernel, obj: Path, cache: Path, known_sha: str | None) -> pipeline.Task:
    return pipeline.Task(kernel=kernel, known_sha=known_sha, objects=(obj,),
                         signature=signature_of([read_object(obj)]), minimizer="python",
                         minimizer_options=(), cache_root=cache)


@pytest.mark.tools
def test_damaged_entries_cost_a_rebuild_not_the_output(tmp_path: Path,
                                                       probe_objects: dict[str, Path]) -> None:
    """generate over a cache whose every raw entry, index and result was truncated or flipped
    writes what it writes from an empty cache, and leaves sound entries behind."""
    archive = tmp_path / "archive"
    src = realkernels.kernel("debian/12/x86_64/6.1.0-56-amd64")
    for key in ("debian/12/x86_64/6.1.0-56-amd64", "debian/12/arm64/6.1.0-56-cloud-arm64"):
        link = archive / f"{key}.btf.tar.xz"
        link.parent.mkdir(parents=True, exist_ok=True)
        os.symlink(realkernels.kernel(key) if key != src else src, link)

    def run(cache: Path, out: Path, obj: str = "base") -> dict[str, bytes]:
        assert cli.main(["generate", "--archive", str(archive), "--object",
                         str(probe_objects[obj]), "--output-dir", str(out), "--cache-dir",
                         str(cache), "--jobs", "1", "--quiet"]) == 0
        return {p.name: p.read_bytes() for p in sorted(out.iterdir())}

    want = run(tmp_path / "fresh", tmp_path / "want")
    cache = tmp_path / "cache"
    run(cache, tmp_path / "first")
    entries = sorted(p for p in cache.rglob("*") if p.suffix in (".zst", ".idx", ".btf"))
    # Type indexes only where the framing runs in Python (gobtfgen.btf.index.KEEP).
    assert {p.suffix for p in entries} == {".zst", ".btf"} | ({".idx"} if btf_index.KEEP else set())
    for n, p in enumerate(entries):
        blob = p.read_bytes()
        if n % 2:
            p.write_bytes(blob[:len(blob) // 2])
        else:
            bad = bytearray(blob)
            bad[-5] ^= 0x01
            p.write_bytes(bytes(bad))
    assert run(cache, tmp_path / "again") == want
    sound = Cache(cache)
    for p in cache.glob("raw/*.zst"):
        assert sound.get_kernel(p.stem) is not None, p
    # The relocations changed too: minimized again from the rebuilt raw entries.
    assert run(cache, tmp_path / "relocs", "relocs") == run(tmp_path / "fresh2",
                                                            tmp_path / "relocs-want", "relocs")


@pytest.mark.tools
@pytest.mark.parametrize("kernel", realkernels.params())
def test_output_from_the_cache_is_the_output_from_the_archive(
        tmp_path: Path, kernel: realkernels.RealKernel, probe_objects: dict[str, Path]) -> None:
    """On every real kernel: minimized from the archive file (empty cache), and again with the
    archive file gone, so that only the cache's raw entry can serve it, the bytes are those of
    the minimizer run on the BTF read straight from the archive."""
    obj = probe_objects["base"]
    want = minimize_btf(read_kernel_btf(kernel.path), [parse_object(obj)], compat=False)
    copy = tmp_path / "archive" / kernel.rel
    copy.parent.mkdir(parents=True)
    copy.write_bytes(kernel.path.read_bytes())
    distro, version, arch, release = kernel.key.split("/")
    k = Kernel(key=kernel.key, distro=distro, version=version, arch=arch, release=release,
               path=copy)
    cache = tmp_path / "cache"
    first = pipeline.minimize_kernel(_task(k, obj, cache, None))
    assert first.status == "minimized" and first.btf == want, first.message
    sha = first.kernel_sha
    assert sha is not None and Cache(cache).get_kernel(sha) is not None
    # The result is gone (relocations changed, say) and so is the archive file: the raw entry
    # and the index are all there is.
    key = minimize_key(sha, _task(k, obj, cache, sha).signature, builtin_identity("python") or "")
    for p in (cache / "min").rglob(f"{key}.*"):
        p.unlink()
    copy.unlink()
    again = pipeline.minimize_kernel(_task(k, obj, cache, sha))
    assert again.status == "minimized", again.message
    assert again.btf == want
    assert again.full_sum == first.full_sum


@pytest.mark.tools
def test_generate_keeps_the_cache_under_cache_limit(tmp_path: Path,
                                                    probe_objects: dict[str, Path]) -> None:
    """The real CLI over three kernels, whose entries take about 2.5 MB (stripped; 4.5 MB
    whole), with a 1 MB cap: the cache ends under it, and the outputs are those of an
    unlimited cache."""
    archive = tmp_path / "archive"
    for key in ("debian/12/x86_64/6.1.0-56-amd64", "debian/12/x86_64/6.1.0-56-cloud-amd64",
                "debian/12/arm64/6.1.0-56-cloud-arm64"):
        link = archive / f"{key}.btf.tar.xz"
        link.parent.mkdir(parents=True, exist_ok=True)
        os.symlink(realkernels.kernel(key), link)

    def run(cache: Path, out: Path, *extra: str) -> dict[str, bytes]:
        assert cli.main(["generate", "--archive", str(archive), "--object",
                         str(probe_objects["base"]), "--output-dir", str(out), "--cache-dir",
                         str(cache), "--jobs", "1", "--quiet", *extra]) == 0
        return {p.name: p.read_bytes() for p in sorted(out.iterdir())}

    want = run(tmp_path / "unlimited", tmp_path / "want")
    assert Cache(tmp_path / "unlimited").usage() > 2 << 20
    capped = tmp_path / "capped"
    assert run(capped, tmp_path / "out", "--cache-limit", "1M") == want
    assert 0 < Cache(capped).usage() <= 1 << 20
    assert run(capped, tmp_path / "out2", "--cache-limit", "0") == want
    assert not list(capped.glob("raw/*")) and not list(capped.glob("min/*/*"))
    assert Cache(capped).usage() <= 16 << 10  # the run's record and the file memo


@pytest.mark.tools
def test_a_run_with_the_same_minimized_btfs_reuses_the_packed_payload(
        tmp_path: Path, probe_objects: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    """An edit that keeps the relocations gives the same minimized BTFs: the payloads come
    from the cache (pack_key), byte for byte what packing gives; a damaged one is packed again."""
    from gobtfgen import pack

    archive = tmp_path / "archive"
    for key in ("debian/12/x86_64/6.1.0-56-amd64", "debian/12/arm64/6.1.0-56-cloud-arm64"):
        link = archive / f"{key}.btf.tar.xz"
        link.parent.mkdir(parents=True, exist_ok=True)
        os.symlink(realkernels.kernel(key), link)
    cache = tmp_path / "cache"
    obj_path = tmp_path / "probe_bpfel.o"  # one path: the outputs name it

    def run(obj: str, out: str) -> dict[str, bytes]:
        obj_path.write_bytes(probe_objects[obj].read_bytes())
        assert cli.main(["generate", "--archive", str(archive), "--object", str(obj_path),
                         "--output-dir", str(tmp_path / out), "--cache-dir", str(cache),
                         "--jobs", "1", "--quiet"]) == 0
        return {p.name: p.read_bytes() for p in sorted((tmp_path / out).iterdir())}

    want = run("base", "first")
    kept = sorted(cache.glob("pack/*.pack"))
    assert len(kept) == 2  # one payload per arch
    real_pack = pack.pack

    def no_pack(*args: object, **kwargs: object) -> object:
        raise AssertionError("packed again although the cache kept this payload")

    monkeypatch.setattr(pack, "pack", no_pack)
    assert run("code", "second") == want
    kept[0].write_bytes(kept[0].read_bytes()[:-3])  # truncated: not used, packed again
    monkeypatch.setattr(pack, "pack", real_pack)
    assert run("code", "third") == want
    assert Cache(cache).get_pack(kept[0].stem) is not None


@pytest.mark.parametrize("where", ["open returns", "rename"])
def test_ctrl_c_in_atomic_write_leaves_no_temp_file_and_the_old_file(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, where: str) -> None:
    # "open returns": the temp file exists but the interrupt lands before its descriptor is
    # stored, the window tempfile.mkstemp left open (its name was known only after it returned).
    from gobtfgen.cache import atomic_write

    target = tmp_path / "entries" / "entry.zst"
    target.parent.mkdir()
    target.write_bytes(b"old")
    real_open, real_replace = os.open, os.replace
    interrupted: list[str] = []

    def open_then_ctrl_c(path: str, flags: int, mode: int = 0o777) -> int:
        fd = real_open(path, flags, mode)
        if os.path.dirname(path) == str(target.parent):
            os.close(fd)
            interrupted.append(path)
            raise KeyboardInterrupt
        return fd

    def replace_ctrl_c(src: str, dst: str) -> None:
        if os.path.dirname(src) == str(target.parent):
            interrupted.append(src)
            raise KeyboardInterrupt
        real_replace(src, dst)

    if where == "open returns":
        monkeypatch.setattr(os, "open", open_then_ctrl_c)
    else:
        monkeypatch.setattr(os, "replace", replace_ctrl_c)
    with pytest.raises(KeyboardInterrupt):
        atomic_write(target, b"new entry")
    monkeypatch.undo()
    assert interrupted, "the interrupt was never raised: atomic_write no longer uses os.open"
    assert sorted(p.name for p in target.parent.iterdir()) == ["entry.zst"]
    assert target.read_bytes() == b"old"
    atomic_write(target, b"new entry")
    assert target.read_bytes() == b"new entry"


def test_memo_forgets_files_that_are_gone(tmp_path: Path) -> None:
    """A saved memo keeps only files that still exist: a fetch update replaces a whole
    archive's worktree, and the old tree's entries must not be loaded by every run after."""
    kept, gone = tmp_path / "kept.btf.tar.xz", tmp_path / "old-tree" / "gone.btf.tar.xz"
    gone.parent.mkdir()
    for path in (kept, gone):
        path.write_bytes(b"x")
    memo = StatMemo(tmp_path / "memo.json")
    for path in (kept, gone):
        memo.record(path, StatMemo.stamp(path), "a" * 64)
    memo.save()
    assert StatMemo(tmp_path / "memo.json").lookup(gone) == "a" * 64
    gone.unlink()
    gone.parent.rmdir()
    memo = StatMemo(tmp_path / "memo.json")
    memo.record(kept, StatMemo.stamp(kept), "b" * 64)  # a run that learnt something saves
    memo.save()
    saved = (tmp_path / "memo.json").read_text()
    assert str(gone) not in saved and str(kept) in saved
    assert StatMemo(tmp_path / "memo.json").lookup(kept) == "b" * 64
