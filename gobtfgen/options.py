"""Flag helpers: each option has an environment fallback, named in --help (flag > env > default)."""

from __future__ import annotations

import argparse
import os
from typing import Any

from gobtfgen.cache import DEFAULT_LIMIT, LIMIT_ENV, parse_size
from gobtfgen.errors import UsageError
from gobtfgen.keys import ARCHES, btfhub_arch

_LIST_DEFAULT = "_list_default_"


def env_default(env: str, default: Any, *, kind: str = "str") -> Any:
    """The default of a flag: the environment variable when set, else default."""
    raw = os.environ.get(env)
    if raw is None or raw == "":
        return default
    if kind == "int":
        try:
            return int(raw)
        except ValueError:
            raise UsageError(f"${env}={raw!r} is not a whole number; unset it or fix it") from None
    if kind == "bool":
        if raw.lower() in ("1", "true", "yes", "on"):
            return True
        if raw.lower() in ("0", "false", "no", "off"):
            return False
        raise UsageError(f"${env}={raw!r} is not a boolean; use 1 or 0")
    if kind == "list":
        return [item for item in raw.replace(",", " ").split() if item]
    return raw


def add(parser: argparse.ArgumentParser | Any, *flags: str, env: str | None, default: Any = None,
        kind: str = "str", help: str, **kwargs: Any) -> None:
    """add_argument with an env fallback; the help says which variable and the default."""
    value = env_default(env, default, kind=kind) if env else default
    extra = []
    if env:
        extra.append(f"env: {env}")
    if default not in (None, [], False, ""):
        extra.append(f"default: {','.join(default) if isinstance(default, list) else default}")
    text = help + (f" ({'; '.join(extra)})" if extra else "")
    if kind == "bool":
        parser.add_argument(*flags, action="store_true", default=value, help=text, **kwargs)
    elif kind == "list":
        dest = kwargs.pop("dest", None) or flags[0].lstrip("-").replace("-", "_")
        parser.add_argument(*flags, action="append", dest=dest, default=None, help=text,
                            **kwargs)
        parser.set_defaults(**{f"{_LIST_DEFAULT}{dest}": list(value or [])})
    elif kind == "int":
        parser.add_argument(*flags, type=int, default=value, help=text, **kwargs)
    else:
        parser.add_argument(*flags, default=value, help=text, **kwargs)


def resolve_lists(args: argparse.Namespace) -> None:
    """Repeated flags replace (not extend) their env/default list."""
    for name, default in list(vars(args).items()):
        if name.startswith(_LIST_DEFAULT):
            dest = name[len(_LIST_DEFAULT):]
            if getattr(args, dest, None) is None:
                setattr(args, dest, list(default))
            delattr(args, name)


def parse_arches(value: str) -> tuple[str, ...]:
    arches: list[str] = []
    for item in value.replace(" ", ",").split(","):
        if not item:
            continue
        name = item.strip().lower()
        # Makefiles written for bpf2go say x86 (its target name); uname and Go say the rest.
        arch = "x86_64" if name == "x86" else btfhub_arch(name)
        if arch is None:
            raise UsageError(f"--arch {item!r} is not a btfhub arch; use "
                             f"{' or '.join(ARCHES)} (amd64/aarch64 are accepted too)")
        if arch not in arches:
            arches.append(arch)
    if not arches:
        raise UsageError(f"--arch is empty; use {','.join(ARCHES)}")
    return tuple(arches)


def add_kernel_filters(parser: argparse.ArgumentParser | Any) -> None:
    """--include/--exclude, the same for every command that selects archive kernels."""
    add(parser, "--include", env="GOBTFGEN_INCLUDE", kind="list", metavar="PAT",
        help="only kernels whose <id>/<version>/<arch>/<release> matches this glob or folder "
             "(repeatable)")
    add(parser, "--exclude", env="GOBTFGEN_EXCLUDE", kind="list", metavar="PAT",
        help="leave out kernels matching this glob or folder (repeatable)")


def add_minimizer_flags(p: argparse.ArgumentParser | Any) -> None:
    add(p, "--minimizer", env="GOBTFGEN_MINIMIZER", default="python",
        choices=["python", "python-compat", "bpftool"],
        help="how to minimize: python (built in: bpftool's algorithm with its defects fixed, "
             "outputs several times smaller), python-compat (bpftool 7.1's exact bytes, built "
             "in), or bpftool (runs bpftool gen min_core_btf)")
    add(p, "--bpftool", env="BPFTOOL", default="bpftool", metavar="PATH",
        help="bpftool to run with --minimizer bpftool (>= 7.0)")


def add_cache_limit(p: argparse.ArgumentParser | Any) -> None:
    add(p, "--cache-limit", env=LIMIT_ENV, default=f"{DEFAULT_LIMIT >> 30}G", metavar="SIZE",
        help="disk the cache may take, every file under --cache-dir counted (bytes, or K, M, G, "
             "T: binary units); least recently used entries go first; the default holds the "
             "whole btfhub-archive (about 7 GB); 0 keeps only the last run's record")


def parse_cache_limit(value: str) -> int:
    try:
        return parse_size(value)
    except ValueError as exc:
        raise UsageError(f"--cache-limit (or ${LIMIT_ENV}): {exc}") from None
