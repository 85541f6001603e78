"""What the generated runtime sees on a host: os-release under the host root, uname, native
BTF and the override variable, and what it would do with them.

Reading os-release mirrors templates/btfgen.go.j2 (btfgenReadOSRelease): /etc before
/usr/lib, the final symlink resolved inside the host root, at most 64 KiB. The key comes from
gobtfgen.keys, the same code the shared vectors check against the Go runtime.
"""

from __future__ import annotations

import os
import posixpath
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import distro

from gobtfgen import keys

NATIVE_BTF = "/sys/kernel/btf/vmlinux"
OS_RELEASE_FILES = ("/etc/os-release", "/usr/lib/os-release")
MAX_OS_RELEASE = 64 << 10
_MAX_LINKS = 16


def _host_path(root: str, name: str) -> str | None:
    """The real path of `name` on a host mounted at root, resolving the final symlink inside
    the root (an absolute /etc/os-release -> /usr/lib/os-release link would otherwise read
    the container's own file); None when it does not exist."""
    if root in ("", "/"):
        return name if os.path.exists(name) else None
    path = name
    for _ in range(_MAX_LINKS + 1):
        full = os.path.join(root, path.lstrip("/"))
        if not os.path.lexists(full):
            return None
        if not os.path.islink(full):
            return full
        target = os.readlink(full)
        path = target if target.startswith("/") else posixpath.normpath(
            posixpath.join(posixpath.dirname(path), target))
    return None


def read_os_release(root: str) -> tuple[str | None, str]:
    """(path read, text) of the host's os-release; (None, "") when there is none."""
    for name in OS_RELEASE_FILES:
        path = _host_path(root, name)
        if path is None:
            continue
        try:
            with open(path, "rb") as f:
                data = f.read(MAX_OS_RELEASE)
        except OSError:
            continue  # as the runtime does: try the next file
        return path, data.decode("utf-8", "replace")
    return None, ""


def distro_name(root: str) -> str:
    """The distro as the `distro` package names it, for display next to our own parse.

    Only for display: distro.id() renames ol to oracle, and its shlex parser raises on the
    broken quoting the runtime tolerates, so it cannot compute keys.
    """
    try:
        info = distro.LinuxDistribution(root_dir=None if root in ("", "/") else root,
                                        include_lsb=False, include_uname=False,
                                        include_oslevel=False)
        return str(info.name(pretty=True))
    except (ValueError, OSError):
        return ""


@dataclass(frozen=True, kw_only=True)
class HostInfo:
    root: str  # host root ("/" for this machine)
    os_release_path: str | None
    os_release_text: str
    os: keys.OSRelease
    distro_name: str
    machine: str
    release: str
    native_path: str
    native_btf: bool
    override_env: str
    override_file: str  # value of override_env, "" when unset

    @property
    def arch(self) -> str | None:
        return keys.btfhub_arch(self.machine)

    @property
    def goarch(self) -> str | None:
        return keys.GOARCH_OF_ARCH.get(self.arch or "")

    @property
    def candidates(self) -> list[str]:
        """The distro keys rule 3 tries, in order."""
        if not (self.arch and self.os.id and keys.valid_key_part(self.os.id)
                and keys.valid_key_part(self.release)):
            return []
        return [keys.format_key(self.os.id, v, self.arch, self.release)
                for v in keys.version_candidates(self.os.id, self.os.version_id)]


def gather(*, root: str = "/", machine: str | None = None, release: str | None = None,
           native_path: str = NATIVE_BTF, env_prefix: str = "BTFGEN",
           environ: Mapping[str, str] | None = None) -> HostInfo:
    environ = os.environ if environ is None else environ
    uname = os.uname()
    path, text = read_os_release(root)
    override_env = f"{env_prefix}_BTF_FILE"
    return HostInfo(
        root=root or "/", os_release_path=path, os_release_text=text,
        os=keys.OSRelease.parse(text), distro_name=distro_name(root) if path else "",
        machine=machine or uname.machine, release=release or uname.release,
        native_path=native_path, native_btf=Path(native_path).exists(),
        override_env=override_env, override_file=environ.get(override_env, ""))
