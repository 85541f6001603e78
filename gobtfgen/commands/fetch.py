"""gobtfgen fetch: clone or update btfhub-archive into a cache directory, shallow and sparse."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from gobtfgen import fetch
from gobtfgen.options import add, parse_arches
from gobtfgen.report import print_problems


def register(sub: Any) -> None:
    p = sub.add_parser(
        "fetch", help="clone or update btfhub-archive into a cache directory (shallow, sparse)",
        description="Download one commit of btfhub-archive, only the folders of the selected "
                    "arches and distros, into a cache directory, and merge several "
                    "repositories into one archive view (the first repository wins on a "
                    "kernel both hold). `gobtfgen generate` uses that view when no --archive "
                    "is given, and records the commits in its manifest. An interrupted or "
                    "failed fetch leaves the previous view as it was.")
    add(p, "--repo", env="BTFHUB_REPO_URL", kind="list", dest="repos", metavar="URL",
        default=fetch.default_repos(),
        help="a btfhub-archive git repository (repeatable; in the variable, separate several "
             "with spaces or commas; $BTFHUB_REPO is read too); the first one wins on a kernel "
             "several hold")
    add(p, "--cache-dir", env="BTFHUB_CACHE_DIR", default=str(fetch.default_cache_dir()),
        metavar="DIR", help="where the checkouts go ($BTFHUB_CACHE is read too); the archive "
                            "is DIR/archive")
    add(p, "--arch", env="GOBTFGEN_ARCH", default="x86_64,arm64",
        help="comma-separated arches to download: x86_64 (amd64), arm64 (aarch64)")
    add(p, "--distro", env="GOBTFGEN_FETCH_DISTRO", kind="list", dest="distros",
        metavar="ID[/VERSION]",
        help="only this distro's folders, as the archive names them: ubuntu, centos/7 "
             "(repeatable; default: every distro)")
    add(p, "--ref", env="BTFHUB_REF", metavar="BRANCH",
        help="branch or tag to fetch (default: the repository's default branch)")
    add(p, "--git", env="GIT", default="git", metavar="PATH", help="git to run")
    add(p, "--progress", env="GOBTFGEN_PROGRESS", kind="bool",
        help="show git's progress even when stderr is not a terminal")
    add(p, "--quiet", "-q", env="GOBTFGEN_QUIET", kind="bool",
        help="no progress from git")
    p.set_defaults(func=run)


def options_from_args(args: argparse.Namespace) -> fetch.FetchOptions:
    return fetch.FetchOptions(
        repos=tuple(args.repos), cache_dir=Path(args.cache_dir).expanduser(),
        arches=parse_arches(args.arch), distros=tuple(args.distros), ref=args.ref or None,
        git=args.git,
        progress=not args.quiet and (args.progress or sys.stderr.isatty()))


def run(args: argparse.Namespace) -> int:
    result = fetch.fetch(options_from_args(args))
    print_problems(list(result.problems))
    for repo in result.repos:
        print(f"gobtfgen: {repo.url} at {repo.commit[:12]}: {repo.kernels} kernels",
              file=sys.stderr)
    if result.shadowed:
        print(f"gobtfgen: {result.shadowed} kernels of later repositories hidden by an earlier "
              "one (first wins)", file=sys.stderr)
    print(f"gobtfgen: archive {result.archive}: {result.kernels} kernels; `gobtfgen generate` "
          "uses it when no --archive is given", file=sys.stderr)
    print(result.archive)
    return 0
