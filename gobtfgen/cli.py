"""Command line: flags, environment, and the one error boundary (`main(argv) -> int`)."""

from __future__ import annotations

import argparse
import importlib
import signal
import sys
from collections.abc import Sequence

from gobtfgen import __version__, tools
from gobtfgen.errors import GobtfgenError

# Each module in gobtfgen/commands/ has register(subparsers) and run(args) -> int.
COMMANDS = ["generate", "minimize", "host", "archive", "check", "fetch"]

EXIT_INTERRUPTED = 130


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The parser; with only, just that subcommand's module is imported (an unchanged
    `gobtfgen generate` then starts without loading the other commands' dependencies)."""
    parser = argparse.ArgumentParser(
        prog="gobtfgen",
        description="Minimized, embedded kernel BTF for Go eBPF programs, so CO-RE programs "
                    "built with cilium/ebpf run on kernels without /sys/kernel/btf/vmlinux.")
    parser.add_argument("--version", action="version", version=f"gobtfgen {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="print every external command before running it")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        if only is not None and name != only:
            continue
        try:
            module = importlib.import_module(f"gobtfgen.commands.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"gobtfgen.commands.{name}":
                continue  # a command not built yet in this checkout
            raise
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None, *, replay: bool = True) -> int:
    """replay=False: the caller (gobtfgen.__main__) has already tried minimize's fast path
    (gobtfgen.commands.minimize_fast.serve), or wants the ordinary one."""
    try:
        # SIGTERM (CI cancelling a job) takes the same clean path as Ctrl-C.
        signal.signal(signal.SIGTERM, signal.default_int_handler)
        argv = list(sys.argv[1:] if argv is None else argv)
        if replay:
            from gobtfgen.commands.minimize_fast import serve

            status = serve(argv)
            if status is not None:
                return status
        # Global options take no values, so the first word that is not an option is the command.
        command = next((a for a in argv if not a.startswith("-")), None)
        if command in ("minimize", "gen"):
            from gobtfgen.commands.minimize import bpftool_order

            argv = bpftool_order(argv)
            command = "minimize" if "minimize" in argv else command
        parser = build_parser(only=command if command in COMMANDS else None)
        args = parser.parse_args(argv)
        tools.VERBOSE = args.verbose
        if not getattr(args, "func", None):
            parser.print_help(sys.stderr)
            return 2
        from gobtfgen.options import resolve_lists

        resolve_lists(args)
        return int(args.func(args))
    except GobtfgenError as exc:
        print(f"gobtfgen: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("gobtfgen: interrupted; outputs left as they were", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        return 1


if __name__ == "__main__":
    sys.exit(main())
