"""gobtfgen fetch: btfhub-archive checkouts in a cache directory, shallow and sparse.

The full archive is ~7.6 GB of git. A fetch downloads one commit (`--depth 1`), no file contents
up front (`--filter=blob:none`), and then only the files of the selected arches and distros (a
non-cone sparse checkout, whose missing blobs git fetches in one batch).

Layout of the cache directory:

    archive/                    what `generate` reads (its default --archive): the repositories
                                merged, first wins; real folders, each kernel a relative
                                symlink into a tree; .gobtfgen-fetch.json records the
                                repositories and commits
    repos/<slug>/git            bare, shallow, partial clone of one repository
    repos/<slug>/trees/<name>   sparse worktrees of it, one per (commit, selection)
    .lock                       one fetch at a time
    .readers                    held shared by every generate or check reading the archive

A fetch builds a complete new tree and archive folder beside the old ones and exchanges the two
folders in one renameat2(RENAME_EXCHANGE), so a failed or interrupted fetch leaves the previous
archive (and the trees it points into) as they were; leftovers are removed by the next fetch.
A run reading the archive (`reading()`) holds .readers shared and reads each kernel through the
tree its symlink points into (`kernel_files()`), so a fetch finishing meanwhile cannot take its
files away: the previous archive and trees are removed only when no run holds .readers, else
they stay for the next fetch to remove.
`archive` is a real folder, not a symlink to one: `find archive` (Makefile.btfgen's dependency
list) does not descend into a symlinked starting point. Worktrees share the object store, so an
update downloads only the files that changed.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import fcntl
import hashlib
import json
import os
import re
import shutil
import sys
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from gobtfgen import tools
from gobtfgen.archive import SUFFIX, Kernel, scan_archive
from gobtfgen.errors import GobtfgenError, InputError, Problem, ToolError, UsageError

DEFAULT_REPO = "https://github.com/aquasecurity/btfhub-archive.git"
ARCHIVE_LINK = "archive"
RECORD = ".gobtfgen-fetch.json"

_DISTRO_RE = re.compile(r"^[A-Za-z0-9_.+-]+(/[A-Za-z0-9_.+-]+)?$")


def default_cache_dir() -> Path:
    """$BTFHUB_CACHE (the variable bpf-compatible's script reads), else the user's cache dir.
    $BTFHUB_CACHE_DIR, the flag's own variable, wins over both."""
    if os.environ.get("BTFHUB_CACHE"):
        return Path(os.environ["BTFHUB_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "gobtfgen" / "btfhub"


def default_repos() -> list[str]:
    """$BTFHUB_REPO (bpf-compatible's script), else btfhub-archive on GitHub. $BTFHUB_REPO_URL,
    the flag's own variable, wins over both."""
    return [u for u in os.environ.get("BTFHUB_REPO", "").replace(",", " ").split() if u] or \
        [DEFAULT_REPO]


def default_archive() -> Path | None:
    """The archive the last fetch made in the default cache, if any."""
    cache = Path(os.environ.get("BTFHUB_CACHE_DIR") or default_cache_dir()).expanduser()
    link = cache / ARCHIVE_LINK
    return link if (link / RECORD).is_file() else None


@dataclass(frozen=True, kw_only=True)
class FetchOptions:
    repos: tuple[str, ...]  # URLs or paths, first wins when two hold the same kernel
    cache_dir: Path
    arches: tuple[str, ...]
    distros: tuple[str, ...] = ()  # "<id>" or "<id>/<version>"; empty: every distro
    ref: str | None = None  # branch or tag; None: the remote's default branch
    git: str = "git"
    progress: bool = False


@dataclass(frozen=True, kw_only=True)
class RepoState:
    url: str
    commit: str
    tree: str  # relative to the cache directory
    kernels: int


@dataclass(frozen=True, kw_only=True)
class FetchResult:
    archive: Path  # cache_dir/archive
    repos: tuple[RepoState, ...]
    kernels: int  # in the merged view
    shadowed: int  # kernels of later repositories hidden by an earlier one
    problems: tuple[Problem, ...]


def sparse_patterns(arches: Sequence[str], distros: Sequence[str]) -> list[str]:
    """Non-cone sparse-checkout patterns selecting <id>/<version>/<arch>/ folders."""
    out = []
    for distro in distros:
        if not _DISTRO_RE.match(distro) or distro.startswith("."):
            raise UsageError(f"--distro {distro!r}: use an os-release ID or ID/VERSION as the "
                             "archive names its folders (ubuntu, centos/7, sles/15.3)")
        folder = distro if "/" in distro else f"{distro}/*"
        out += [f"/{folder}/{arch}/" for arch in arches]
    return out or [f"/*/*/{arch}/" for arch in arches]


def repo_slug(url: str) -> str:
    """A folder name for a repository: readable, and distinct for distinct URLs."""
    name = re.sub(r"\.git$", "", url.rstrip("/").rsplit("/", 1)[-1]) or "repo"
    name = re.sub(r"[^A-Za-z0-9_.-]", "_", name).lstrip(".") or "repo"
    return f"{name}-{hashlib.sha256(url.encode()).hexdigest()[:10]}"


def read_record(archive: Path) -> dict[str, object] | None:
    """The fetch record of a view (generate copies it into its manifest)."""
    try:
        data = json.loads((archive / RECORD).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def sources_of(archive: Path) -> list[dict[str, str]] | None:
    """[{url, commit}] of the repositories a fetched view was made from, first wins."""
    record = read_record(archive)
    repos = record.get("repos") if record else None
    if not isinstance(repos, list):
        return None
    return [{"url": str(r.get("url")), "commit": str(r.get("commit"))}
            for r in repos if isinstance(r, dict)]


@contextlib.contextmanager
def _locked(cache: Path) -> Iterator[None]:
    cache.mkdir(parents=True, exist_ok=True)
    with open(cache / ".lock", "w") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise GobtfgenError(f"another gobtfgen fetch is running in {cache}; wait for it "
                                "or use another --cache-dir") from None
        yield


READERS = ".readers"


@contextlib.contextmanager
def reading(archive: Path) -> Iterator[None]:
    """Held by a run for as long as it reads kernels of an archive fetch made (shared, so runs
    do not wait for each other): a fetch does not remove the files such a run uses. Anything
    else is read with no lock; so is a fetched archive in a read-only cache."""
    if not (archive / RECORD).is_file():
        yield
        return
    try:
        # resolve(): an archive given through a symlink still locks its own cache.
        f = open(archive.resolve().parent / READERS, "a+b")  # noqa: SIM115 (held across the yield)
    except OSError:
        yield
        return
    with f:
        fcntl.flock(f, fcntl.LOCK_SH)  # a fetch holds it exclusive only for a moment
        yield


@contextlib.contextmanager
def _unread(cache: Path) -> Iterator[bool]:
    """Whether no run is reading the archive, held so none starts meanwhile."""
    try:
        f = open(cache / READERS, "a+b")  # noqa: SIM115 (held across the yield)
    except OSError:
        yield True
        return
    with f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        yield True


def kernel_files(archive: Path, kernels: Sequence[Kernel]) -> list[Kernel]:
    """For an archive fetch made, each kernel with the path its symlink points to (in a tree
    that stays while the run holds reading()); other archives' kernels as they are."""
    if not (archive / RECORD).is_file():
        return list(kernels)
    # Links are relative ("../../../../repos/..."): follow them from the archive's real place
    # (it may have been given through a symlink), where the folders above are real ones.
    root = archive.resolve()
    out = []
    for k in kernels:
        try:
            link = root / k.path.relative_to(archive)
            target = os.readlink(link)
        except (OSError, ValueError):  # not a link (a real file), or not under the archive
            out.append(k)
            continue
        out.append(dataclasses.replace(k, path=Path(os.path.normpath(link.parent / target))))
    return out


def _say(message: str) -> None:
    print(f"gobtfgen: {message}", file=sys.stderr, flush=True)


class _Repo:
    """One repository's bare clone and worktrees under repos/<slug>."""

    def __init__(self, options: FetchOptions, url: str) -> None:
        self.options = options
        self.url = url
        self.dir = options.cache_dir / "repos" / repo_slug(url)
        self.git_dir = self.dir / "git"

    def git(self, *args: str, cwd: Path | None = None, progress: bool = False) -> str:
        prefix = [] if cwd else [f"--git-dir={self.git_dir}"]
        return tools.git([*prefix, *args], git=self.options.git, cwd=cwd,
                         progress=progress and self.options.progress).stdout.strip()

    def update(self) -> str:
        """Clone or fetch the newest commit (no file contents yet); return its id."""
        ref = self.options.ref
        if not (self.git_dir / "HEAD").is_file():
            self.dir.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(dir=self.dir, prefix=".clone-"))
            try:
                _say(f"cloning {self.url} (one commit, no file contents yet)")
                self.git("clone", "--bare", "--depth", "1", "--filter=blob:none", "--no-tags",
                         *(["--branch", ref] if ref else []),
                         *(["--progress"] if self.options.progress else []),
                         self.url, str(tmp / "git"), cwd=self.dir, progress=True)
                os.replace(tmp / "git", self.git_dir)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
            return self.git("rev-parse", "HEAD^{commit}")
        url = self.git("config", "--get", "remote.origin.url")
        if url != self.url:  # same slug, other URL: only on a hash collision or a hand edit
            raise InputError(f"{self.git_dir} is a clone of {url}, not {self.url}; remove "
                             f"{self.dir} and fetch again")
        _say(f"updating {self.url}")
        self.git("fetch", "--depth", "1", "--no-tags",
                 *(["--progress"] if self.options.progress else []),
                 "origin", ref or "HEAD", progress=True)
        return self.git("rev-parse", "FETCH_HEAD^{commit}")

    def tree(self, commit: str, patterns: list[str]) -> Path:
        """A sparse worktree of commit with the patterns, made complete or not at all."""
        name = f"{commit[:12]}-{hashlib.sha256(chr(10).join(patterns).encode()).hexdigest()[:8]}"
        trees = self.dir / "trees"
        final = trees / name
        if (final / ".git").is_file() and (trees / f".{name}.done").is_file():
            return final  # the same commit and selection as a tree made before
        trees.mkdir(parents=True, exist_ok=True)
        self._remove_tree(final)
        work = final
        try:
            self.git("worktree", "add", "--no-checkout", "--detach", str(work), commit)
            self.git("sparse-checkout", "set", "--no-cone", *patterns, cwd=work)
            _say(f"checking out {len(patterns)} folder pattern(s) of {commit[:12]}: "
                 + " ".join(patterns[:6]) + (" ..." if len(patterns) > 6 else ""))
            # With an empty index (--no-checkout), read-tree -mu populates exactly the sparse
            # selection; git fetches the missing file contents in one batch.
            self.git("read-tree", "-mu", "HEAD", cwd=work, progress=True)
            (trees / f".{name}.done").write_text(commit + "\n")
        except BaseException:
            self._remove_tree(final)
            raise
        return final

    def _remove_tree(self, path: Path) -> None:
        (path.parent / f".{path.name}.done").unlink(missing_ok=True)
        if path.exists():
            shutil.rmtree(path, ignore_errors=True)
        with contextlib.suppress(GobtfgenError):
            self.git("worktree", "prune")

    def prune(self, keep: set[Path]) -> None:
        trees = self.dir / "trees"
        if not trees.is_dir():
            return
        for child in trees.iterdir():
            if child.name.startswith("."):
                if child.name.endswith(".done") and trees / child.name[1:-5] in keep:
                    continue
                if child.is_dir():
                    shutil.rmtree(child, ignore_errors=True)
                else:
                    child.unlink(missing_ok=True)
            elif child not in keep:
                self._remove_tree(child)


def _build_view(cache: Path, trees: list[tuple[str, str, Path]],
                options: FetchOptions) -> tuple[Path, list[RepoState], int, int, list[Problem]]:
    """A new archive folder beside cache/archive (same depth, so its relative links stay
    right once it takes that name): every kernel of the trees, first tree wins on a key."""
    tmp = Path(tempfile.mkdtemp(dir=cache, prefix=f".{ARCHIVE_LINK}-new-"))
    seen: set[str] = set()
    shadowed = 0
    states: list[RepoState] = []
    problems: list[Problem] = []
    try:
        for url, commit, tree in trees:
            kernels, found = scan_archive(tree, options.arches)
            problems += found
            count = 0
            for kernel in kernels:
                if kernel.key in seen:
                    shadowed += 1
                    continue
                seen.add(kernel.key)
                count += 1
                link = tmp / f"{kernel.key}{SUFFIX}"
                link.parent.mkdir(parents=True, exist_ok=True)
                # Relative links: the cache directory can move (or be mounted elsewhere).
                os.symlink(os.path.relpath(kernel.path, link.parent), link)
            states.append(RepoState(url=url, commit=commit,
                                    tree=os.path.relpath(tree, cache), kernels=count))
        record = {"generator": "gobtfgen fetch", "arches": list(options.arches),
                  "distros": list(options.distros), "ref": options.ref,
                  "repos": [vars(s) for s in states], "kernels": len(seen)}
        (tmp / RECORD).write_text(json.dumps(record, indent=1) + "\n")
        tmp.chmod(0o755)  # mkdtemp made it 0700
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return tmp, states, len(seen), shadowed, problems


_RENAME_EXCHANGE = 2  # linux/fs.h


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths atomically (renameat2 RENAME_EXCHANGE, Linux 3.15); False when the
    kernel, libc or file system cannot."""
    import ctypes  # here: only a fetch that replaces an archive needs it

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd = -100
    if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
        return False
    raise OSError(err, f"exchange {a} and {b}: {os.strerror(err)}")


def _switch(cache: Path, new: Path) -> Path | None:
    """Put new in place of cache/archive; returns where the old archive went (to remove)."""
    archive = cache / ARCHIVE_LINK
    if archive.is_symlink():  # made by an earlier gobtfgen that linked to a view
        archive.unlink()
    if not archive.exists():
        os.rename(new, archive)
        return None
    if _exchange(new, archive):
        return new
    # No atomic exchange here: two renames, with a moment in which no archive exists.
    old = cache / f".{ARCHIVE_LINK}-old-{os.getpid()}"
    os.rename(archive, old)
    os.rename(new, archive)
    return old


def fetch(options: FetchOptions) -> FetchResult:
    if not options.repos:
        raise UsageError("no repository: pass --repo URL or set BTFHUB_REPO_URL")
    patterns = sparse_patterns(options.arches, options.distros)
    cache = options.cache_dir
    with _locked(cache):
        archive = cache / ARCHIVE_LINK
        if archive.is_dir() and not archive.is_symlink() and not (archive / RECORD).is_file() \
                and any(archive.iterdir()):
            raise InputError(f"{archive} was not made by gobtfgen fetch; pass another "
                             "--cache-dir")
        # Leftovers of an interrupted fetch, or kept for runs that were reading them.
        with _unread(cache) as unread:
            if unread:
                for child in cache.glob(f".{ARCHIVE_LINK}-*"):
                    shutil.rmtree(child, ignore_errors=True)
                shutil.rmtree(cache / "views", ignore_errors=True)  # an earlier gobtfgen's
        repos = [_Repo(options, url) for url in dict.fromkeys(options.repos)]
        trees: list[tuple[str, str, Path]] = []
        for repo in repos:
            try:
                commit = repo.update()
                trees.append((repo.url, commit, repo.tree(commit, patterns)))
            except ToolError as exc:
                raise ToolError(f"fetch {repo.url}: {exc}; the previous archive in {cache} "
                                "is unchanged") from None
        new, states, kernels, shadowed, problems = _build_view(cache, trees, options)
        old = _switch(cache, new)
        # Only now is anything old unreachable: remove the old archive folder and trees, unless
        # a run is still reading them (then the next fetch does).
        with _unread(cache) as unread:
            if unread:
                if old is not None:
                    shutil.rmtree(old, ignore_errors=True)
                keep = {cache / s.tree for s in states}
                for repo in repos:
                    repo.prune(keep)
            else:
                _say("the previous archive stays while a gobtfgen run reads it; the next "
                     "fetch removes it")
    return FetchResult(archive=cache / ARCHIVE_LINK, repos=tuple(states), kernels=kernels,
                       shadowed=shadowed, problems=tuple(problems))
