"""gobtfgen fetch against local git repositories built from test data (file:// URLs, never the
internet): first clone, update, sparse selection, several repositories, failed and
interrupted fetches, and generate picking the fetched archive up with its commits."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from gobtfgen import cli, fetch
from gobtfgen.archive import scan_archive
from gobtfgen.commands import fetch as fetch_command
from gobtfgen.errors import UsageError
from gobtfgen.options import resolve_lists
from tests.conftest import FIXTURES, REPO, compile_bpf, need

GIT_ENV = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.com",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.com",
           "GIT_CONFIG_NOSYSTEM": "1"}


# ---- unit ------------------------------------------------------------------------------------

def test_sparse_patterns() -> None:
    assert fetch.sparse_patterns(("x86_64",), ()) == ["/*/*/x86_64/"]
    assert fetch.sparse_patterns(("x86_64", "arm64"), ("ubuntu", "centos/7")) == [
        "/ubuntu/*/x86_64/", "/ubuntu/*/arm64/", "/centos/7/x86_64/", "/centos/7/arm64/"]
    for bad in ("../x", ".git", "a/b/c", "ubuntu*", ""):
        with pytest.raises(UsageError):
            fetch.sparse_patterns(("x86_64",), (bad,))


def test_repo_slug_is_readable_and_distinct() -> None:
    a = fetch.repo_slug("https://github.com/aquasecurity/btfhub-archive.git")
    b = fetch.repo_slug("https://example.com/mirror/btfhub-archive")
    assert a.startswith("btfhub-archive-") and b.startswith("btfhub-archive-") and a != b
    assert "/" not in fetch.repo_slug("file:///") and not fetch.repo_slug("x/.git").startswith(".")


# ---- local repositories ----------------------------------------------------------------------

def git(*args: str, cwd: Path) -> str:
    proc = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True,
                          env={**os.environ, **GIT_ENV}, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


def make_repo(path: Path, files: dict[str, bytes]) -> str:
    """A btfhub-like repository with files; serves partial clones like GitHub does."""
    path.mkdir(parents=True)
    git("init", "-q", "-b", "main", cwd=path)
    git("config", "uploadpack.allowFilter", "true", cwd=path)
    commit(path, files, "initial")
    return f"file://{path}"


def commit(path: Path, files: dict[str, bytes | None], message: str) -> str:
    for rel, data in files.items():
        target = path / rel
        if data is None:
            git("rm", "-q", rel, cwd=path)
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
        git("add", rel, cwd=path)
    git("commit", "-q", "-m", message, cwd=path)
    return git("rev-parse", "HEAD", cwd=path)


KERNELS = {
    "ubuntu/20.04/x86_64/5.4.0-26-generic.btf.tar.xz": b"ubuntu 5.4 x86",
    "ubuntu/20.04/arm64/5.4.0-26-generic.btf.tar.xz": b"ubuntu 5.4 arm",
    "centos/7/x86_64/3.10.0-1160.el7.x86_64.btf.tar.xz": b"centos 7",
    "centos/8/x86_64/4.18.0-305.el8.x86_64.btf.tar.xz": b"centos 8",
    "README.md": b"not a kernel",
}


def run_fetch(cache: Path, *args: str) -> int:
    return cli.main(["fetch", "--cache-dir", str(cache), "--quiet", *args])


def archive_files(cache: Path) -> dict[str, bytes]:
    root = cache / "archive"
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*.btf.tar.xz"))}


@pytest.fixture(autouse=True)
def _env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("BTFHUB_REPO_URL", "BTFHUB_CACHE_DIR", "BTFHUB_REPO", "BTFHUB_CACHE",
                 "GOBTFGEN_ARCH", "GOBTFGEN_FETCH_DISTRO", "BTFHUB_ARCHIVE", "GIT"):
        monkeypatch.delenv(name, raising=False)
    for name, value in GIT_ENV.items():
        monkeypatch.setenv(name, value)


@pytest.fixture
def git_tool() -> str:
    return need("git", " (gobtfgen fetch runs git)")


@pytest.mark.tools
def test_first_clone_is_shallow_and_sparse(tmp_path: Path, git_tool: str) -> None:
    url = make_repo(tmp_path / "src", KERNELS)
    head = git("rev-parse", "HEAD", cwd=tmp_path / "src")
    cache = tmp_path / "cache"
    assert run_fetch(cache, "--repo", url, "--arch", "x86_64") == 0
    assert archive_files(cache) == {k: v for k, v in KERNELS.items() if "/x86_64/" in k}
    record = json.loads((cache / "archive" / fetch.RECORD).read_text())
    assert [(r["url"], r["commit"], r["kernels"]) for r in record["repos"]] == [(url, head, 3)]
    assert fetch.sources_of(cache / "archive") == [{"url": url, "commit": head}]
    # Shallow and partial: one commit, and the arm64 file's content was never downloaded.
    bare = next((cache / "repos").iterdir()) / "git"
    assert git("rev-list", "--count", "--all", cwd=bare) == "1"
    arm_blob = git("rev-parse", "HEAD:ubuntu/20.04/arm64/5.4.0-26-generic.btf.tar.xz",
                   cwd=tmp_path / "src")
    # --missing=print lists objects a partial clone lacks ("?<id>") without fetching them.
    missing = git("rev-list", "--objects", "--missing=print", "HEAD", cwd=bare).split()
    assert f"?{arm_blob}" in missing, "the unselected arm64 file was downloaded"
    # Unchanged remote and selection: no new checkout is made.
    trees = sorted((bare.parent / "trees").iterdir())
    assert run_fetch(cache, "--repo", url, "--arch", "x86_64") == 0
    assert sorted((bare.parent / "trees").iterdir()) == trees
    # A real folder (find, and so Makefile.btfgen, does not descend into a symlinked one).
    assert (cache / "archive").is_dir() and not (cache / "archive").is_symlink()


@pytest.mark.tools
def test_update_follows_the_remote(tmp_path: Path, git_tool: str) -> None:
    src = tmp_path / "src"
    url = make_repo(src, KERNELS)
    cache = tmp_path / "cache"
    assert run_fetch(cache, "--repo", url, "--arch", "x86_64") == 0
    new_head = commit(src, {"centos/8/x86_64/4.18.0-305.el8.x86_64.btf.tar.xz": None,
                            "amzn/2/x86_64/5.10.50-44.132.amzn2.x86_64.btf.tar.xz": b"amzn 2",
                            "centos/7/x86_64/3.10.0-1160.el7.x86_64.btf.tar.xz": b"centos 7 v2"},
                      "update")
    assert run_fetch(cache, "--repo", url, "--arch", "x86_64") == 0
    assert archive_files(cache) == {
        "amzn/2/x86_64/5.10.50-44.132.amzn2.x86_64.btf.tar.xz": b"amzn 2",
        "centos/7/x86_64/3.10.0-1160.el7.x86_64.btf.tar.xz": b"centos 7 v2",
        "ubuntu/20.04/x86_64/5.4.0-26-generic.btf.tar.xz": b"ubuntu 5.4 x86",
    }
    assert fetch.sources_of(cache / "archive") == [{"url": url, "commit": new_head}]
    # The old archive folder and tree are gone once the new ones are in place.
    assert sorted(p.name for p in cache.iterdir()) == [".lock", ".readers", "archive", "repos"]
    trees = next((cache / "repos").iterdir()) / "trees"
    assert [p.name[:12] for p in trees.iterdir() if not p.name.startswith(".")] == [new_head[:12]]


@pytest.mark.tools
def test_a_run_reading_the_archive_keeps_its_files(tmp_path: Path, git_tool: str,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    """A generate or check reading the fetched archive while a fetch replaces it goes on
    reading the kernels it scanned; the previous archive goes at the next fetch."""
    src = tmp_path / "src"
    url = make_repo(src, KERNELS)
    cache = tmp_path / "cache"
    assert run_fetch(cache, "--repo", url, "--arch", "x86_64") == 0
    archive = cache / "archive"
    kernels, _ = scan_archive(archive, ["x86_64"])
    with fetch.reading(archive):  # what generate and check hold
        files = fetch.kernel_files(archive, kernels)
        assert all("trees" in k.path.parts for k in files)
        before = {k.key: k.path.read_bytes() for k in files}
        head = commit(src, {"centos/8/x86_64/4.18.0-305.el8.x86_64.btf.tar.xz": None,
                            "centos/7/x86_64/3.10.0-1160.el7.x86_64.btf.tar.xz": b"centos 7 v2"},
                      "update")
        assert run_fetch(cache, "--repo", url, "--arch", "x86_64") == 0  # does not wait
        assert "previous archive stays while a gobtfgen run reads it" in capsys.readouterr().err
        assert fetch.sources_of(archive) == [{"url": url, "commit": head}]
        assert "centos/8/x86_64/4.18.0-305.el8.x86_64.btf.tar.xz" not in archive_files(cache)
        # The run still reads what it scanned, the removed kernel included.
        assert {k.key: k.path.read_bytes() for k in files} == before
        assert before["centos/8/x86_64/4.18.0-305.el8.x86_64"] == b"centos 8"
        # Through a symlink to the archive (as BTFHUB_ARCHIVE may be), the same files.
        link = tmp_path / "btfhub-archive"
        link.symlink_to(archive)
        via_link = fetch.kernel_files(link, scan_archive(link, ["x86_64"])[0])
        assert {k.key: k.path for k in via_link} == {k.key: k.path for k in
                                                     fetch.kernel_files(archive, kernels)
                                                     if k.key in {v.key for v in via_link}}
    assert run_fetch(cache, "--repo", url, "--arch", "x86_64") == 0  # nobody reading now
    assert sorted(p.name for p in cache.iterdir()) == [".lock", ".readers", "archive", "repos"]
    trees = next((cache / "repos").iterdir()) / "trees"
    assert [p.name[:12] for p in trees.iterdir() if not p.name.startswith(".")] == [head[:12]]
    assert not any(k.path.exists() for k in files if k.key.startswith("centos/8"))


@pytest.mark.tools
def test_sparse_selection_by_distro_and_arch(tmp_path: Path, git_tool: str) -> None:
    url = make_repo(tmp_path / "src", KERNELS)
    cache = tmp_path / "cache"
    assert run_fetch(cache, "--repo", url, "--distro", "ubuntu", "--distro", "centos/7") == 0
    assert sorted(archive_files(cache)) == [
        "centos/7/x86_64/3.10.0-1160.el7.x86_64.btf.tar.xz",
        "ubuntu/20.04/arm64/5.4.0-26-generic.btf.tar.xz",
        "ubuntu/20.04/x86_64/5.4.0-26-generic.btf.tar.xz"]
    tree = next(p for p in (next((cache / "repos").iterdir()) / "trees").iterdir()
                if not p.name.startswith("."))
    assert not (tree / "centos" / "8").exists() and not (tree / "README.md").exists()
    # A narrower selection later is a new tree over the same clone.
    assert run_fetch(cache, "--repo", url, "--arch", "arm64", "--distro", "ubuntu") == 0
    assert list(archive_files(cache)) == ["ubuntu/20.04/arm64/5.4.0-26-generic.btf.tar.xz"]


@pytest.mark.tools
def test_several_repositories_first_wins(tmp_path: Path, git_tool: str,
                                         monkeypatch: pytest.MonkeyPatch,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    first = make_repo(tmp_path / "custom", {
        "centos/7/x86_64/3.10.0-1160.el7.x86_64.btf.tar.xz": b"custom centos 7",
        "mycorp/1/x86_64/5.15.0-mycorp.btf.tar.xz": b"mycorp"})
    second = make_repo(tmp_path / "upstream", KERNELS)
    cache = tmp_path / "cache"
    monkeypatch.setenv("BTFHUB_REPO_URL", f"{first} {second}")
    monkeypatch.setenv("BTFHUB_CACHE_DIR", str(cache))
    assert cli.main(["fetch", "--arch", "x86_64", "-q"]) == 0
    files = archive_files(cache)
    assert files["centos/7/x86_64/3.10.0-1160.el7.x86_64.btf.tar.xz"] == b"custom centos 7"
    assert files["mycorp/1/x86_64/5.15.0-mycorp.btf.tar.xz"] == b"mycorp"
    assert files["centos/8/x86_64/4.18.0-305.el8.x86_64.btf.tar.xz"] == b"centos 8"
    assert len(files) == 4
    assert [s["url"] for s in fetch.sources_of(cache / "archive") or []] == [first, second]
    err = capsys.readouterr().err
    assert "1 kernels of later repositories hidden by an earlier one" in err
    # generate's default archive is this one (BTFHUB_CACHE_DIR names the cache).
    assert fetch.default_archive() == cache / "archive"


@pytest.mark.tools
def test_failed_fetch_keeps_the_previous_archive(tmp_path: Path, git_tool: str,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    src = tmp_path / "src"
    url = make_repo(src, KERNELS)
    cache = tmp_path / "cache"
    assert run_fetch(cache, "--repo", url, "--arch", "x86_64") == 0
    before = archive_files(cache)
    os.rename(src, tmp_path / "moved")  # the remote is gone
    capsys.readouterr()
    assert run_fetch(cache, "--repo", url, "--arch", "x86_64") == 1
    err = capsys.readouterr().err
    assert f"fetch {url}" in err and "previous archive" in err and "unchanged" in err
    assert archive_files(cache) == before
    assert run_fetch(cache, "--repo", f"file://{tmp_path}/nowhere", "--arch", "x86_64") == 1
    assert archive_files(cache) == before


@pytest.mark.tools
def test_interrupted_fetch_keeps_the_previous_archive(tmp_path: Path, git_tool: str) -> None:
    """Ctrl-C while git checks out the new commit: the archive still shows the old commit's
    files, nothing half-made stays behind, and the next fetch completes."""
    src = tmp_path / "src"
    url = make_repo(src, KERNELS)
    cache = tmp_path / "cache"
    assert run_fetch(cache, "--repo", url, "--arch", "x86_64") == 0
    before = archive_files(cache)
    record = (cache / "archive" / fetch.RECORD).read_text()
    commit(src, {"centos/7/x86_64/3.10.0-1160.el7.x86_64.btf.tar.xz": b"centos 7 v2"}, "update")

    # A git that interrupts gobtfgen (as Ctrl-C would) when the checkout starts.
    wrapper = tmp_path / "git-interrupting"
    wrapper.write_text(f"""#!/bin/sh
for arg in "$@"; do
  if [ "$arg" = read-tree ]; then kill -INT $PPID; sleep 2; exit 1; fi
done
exec {git_tool} "$@"
""")
    wrapper.chmod(wrapper.stat().st_mode | stat.S_IXUSR)
    proc = subprocess.run([sys.executable, "-m", "gobtfgen", "fetch", "--cache-dir", str(cache),
                           "--repo", url, "--arch", "x86_64", "--git", str(wrapper)],
                          cwd=REPO, capture_output=True, text=True, timeout=60,
                          env={**os.environ, **GIT_ENV})
    assert proc.returncode == cli.EXIT_INTERRUPTED, proc.stderr
    assert "interrupted" in proc.stderr
    assert (cache / "archive" / fetch.RECORD).read_text() == record
    assert archive_files(cache) == before
    trees = next((cache / "repos").iterdir()) / "trees"
    assert len([p for p in trees.iterdir() if not p.name.startswith(".")]) == 1

    assert run_fetch(cache, "--repo", url, "--arch", "x86_64") == 0
    assert archive_files(cache)["centos/7/x86_64/3.10.0-1160.el7.x86_64.btf.tar.xz"] == \
        b"centos 7 v2"


@pytest.mark.tools
def test_generate_uses_the_fetched_archive_and_records_its_commit(
        tmp_path: Path, git_tool: str, real_archive: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    need("bpftool")
    if not Path("/usr/include/bpf/bpf_helpers.h").exists():
        pytest.skip(reason="libbpf headers are missing; apt-get install libbpf-dev")
    keys = [str(p.relative_to(real_archive)).removesuffix(".btf.tar.xz")
            for p in sorted(real_archive.glob("*/*/x86_64/*.btf.tar.xz"))[:1]]
    files = {f"{k}.btf.tar.xz": (real_archive / f"{k}.btf.tar.xz").read_bytes() for k in keys}
    url = make_repo(tmp_path / "src", files)
    head = git("rev-parse", "HEAD", cwd=tmp_path / "src")
    cache = tmp_path / "cache"
    monkeypatch.setenv("BTFHUB_CACHE_DIR", str(cache))
    assert cli.main(["fetch", "--repo", url, "--arch", "x86_64", "-q"]) == 0
    obj = compile_bpf(FIXTURES / "probe.bpf.c", tmp_path / "probe.o", "VARIANT=0")
    out = tmp_path / "out"
    assert cli.main(["generate", "--object", str(obj), "--output-dir", str(out), "--arch",
                     "x86_64", "--lang", "c", "--cache-dir", str(tmp_path / "gcache"),
                     "-q"]) == 0
    manifest = json.loads((out / "btfgen_manifest.json").read_text())
    assert manifest["archive"]["path"] == str(cache / "archive")
    assert manifest["archive"]["commit"] == head
    assert manifest["archive"]["sources"] == [{"url": url, "commit": head}]
    assert [k["key"] for k in manifest["kernels"] if k["status"] == "embedded"] == keys


def test_bpf_compatible_variables(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """bpf-compatible's script reads $BTFHUB_CACHE and $BTFHUB_REPO; the flags' own
    variables ($BTFHUB_CACHE_DIR, $BTFHUB_REPO_URL) win over them."""
    monkeypatch.setenv("BTFHUB_CACHE", str(tmp_path / "eunomia"))
    monkeypatch.setenv("BTFHUB_REPO", "file:///a, file:///b")
    args = cli.build_parser().parse_args(["fetch"])
    resolve_lists(args)
    options = fetch_command.options_from_args(args)
    assert options.cache_dir == tmp_path / "eunomia"
    assert options.repos == ("file:///a", "file:///b")
    monkeypatch.setenv("BTFHUB_CACHE_DIR", str(tmp_path / "mine"))
    monkeypatch.setenv("BTFHUB_REPO_URL", "file:///c")
    args = cli.build_parser().parse_args(["fetch"])
    resolve_lists(args)
    options = fetch_command.options_from_args(args)
    assert options.cache_dir == tmp_path / "mine" and options.repos == ("file:///c",)
    assert fetch.default_archive() is None  # nothing fetched there
