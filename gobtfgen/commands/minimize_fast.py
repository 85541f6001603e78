"""`gobtfgen minimize`'s command line read without argparse, and the replay of a result kept.

A drop-in for `bpftool gen min_core_btf` is run once per kernel, often by a Makefile that runs
it again with the same inputs, and bpftool's whole process takes about as long as Python's
start. So before anything else is imported, the console script and `python -m gobtfgen` read
the common forms of the command line here and, when a result for the same inputs is kept
(gobtfgen.minimize.replay), write it and exit; else a raw kernel BTF is minimized here with
only the minimizer's modules imported (run_plain). Anything else (another command, --help,
-B, --minimizer bpftool, an option this does not know, a .btf.tar.xz, any failure) returns
None and takes the ordinary path through argparse, which also reports every error.
"""

from __future__ import annotations

import os
import sys

# typing.TYPE_CHECKING without importing typing (mypy reads this name); collections.abc costs
# 4 ms where os has loaded _collections_abc already.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Sequence

    from gobtfgen.minimize.replay import Inputs

_BPFTOOL_NOOP_FLAGS = (("-j", "--json"), ("-p", "--pretty"), ("-l", "--legacy"),
                       ("-L", "--use-loader"), ("-m", "--mapcompat"), ("-n", "--nomount"),
                       ("-f", "--bpffs"))
_VALUE_OPTIONS = frozenset({"--minimizer", "--bpftool", "-B", "--base", "--base-btf"})
_FLAGS = frozenset({"-d", "--debug", *(f for pair in _BPFTOOL_NOOP_FLAGS for f in pair)})
_GLOBAL_FLAGS = frozenset({"-v", "--verbose"})


def bpftool_order(argv: Sequence[str]) -> list[str]:
    """Options first, positionals last, as bpftool's getopt_long sees them.

    argparse cannot take an option between two OBJECTs (`minimize in out a.o -d b.o`); bpftool
    can, because GNU getopt moves options before the operands. This does the same for the
    words after `minimize`.
    """
    argv = list(argv)
    words = [w for w in argv if not w.startswith("-")]
    if len(words) >= 2 and words[0] == "gen" and "min_core_btf".startswith(words[1]) \
            and len(words[1]) >= 1:
        # `BPFTOOL=gobtfgen`: bpftool's own command line, `gen` and a prefix of
        # `min_core_btf` included (bpftool matches command prefixes), options anywhere.
        gen = argv.index("gen")
        sub = argv.index(words[1], gen + 1)
        argv = ["minimize", *argv[:gen], *argv[gen + 1:sub], *argv[sub + 1:]]
    try:
        at = argv.index("minimize")
    except ValueError:
        return argv
    opts: list[str] = []
    operands: list[str] = []
    rest = iter(argv[at + 1:])
    for word in rest:
        if word == "--":
            operands.extend(rest)
        elif word in _VALUE_OPTIONS:
            opts.append(word)
            value = next(rest, None)
            if value is not None:
                opts.append(value)
        elif word.startswith("-") and word != "-":
            opts.append(word)
        else:
            operands.append(word)
    return [*argv[:at + 1], *opts, *(["--", *operands] if operands else [])]


class Simple:
    """A `minimize INPUT OUTPUT OBJECT...` command line as argparse would read it."""

    __slots__ = ("input", "output", "objects", "minimizer")

    def __init__(self, input: str, output: str, objects: list[str], minimizer: str) -> None:
        self.input = input
        self.output = output
        self.objects = objects
        self.minimizer = minimizer


def parse_simple(argv: Sequence[str]) -> Simple | None:
    """The command line when it is a plain minimize (global -v, -d, bpftool's no-op flags,
    --minimizer with a built-in minimizer), else None."""
    command = next((a for a in argv if not a.startswith("-")), None)
    if command not in ("minimize", "gen"):
        return None
    words = bpftool_order(argv)
    if "minimize" not in words:
        return None
    at = words.index("minimize")
    if any(w not in _GLOBAL_FLAGS for w in words[:at]):
        return None
    minimizer = os.environ.get("GOBTFGEN_MINIMIZER") or "python"
    rest = iter(words[at + 1:])
    operands: list[str] = []
    for word in rest:
        if word == "--":
            operands = list(rest)
        elif word == "--minimizer":
            value = next(rest, None)
            if value is None:
                return None
            minimizer = value
        elif word not in _FLAGS:
            return None
    if len(operands) < 3 or minimizer not in ("python", "python-compat"):
        return None
    return Simple(operands[0], operands[1], operands[2:], minimizer)


def display_path(path: str) -> str:
    """str(pathlib.Path(path)) on POSIX without importing pathlib (a replay cannot afford it),
    so a replayed note names an object exactly as the command's own note does."""
    if os.sep != "/":  # pragma: no cover - gobtfgen's replay is POSIX-only
        from pathlib import Path

        return str(Path(path))
    lead = "//" if path.startswith("//") and not path.startswith("///") else \
        "/" if path.startswith("/") else ""
    return (lead + "/".join(p for p in path.split("/") if p and p != ".")) or "."


def skipped_note(path: str) -> str:
    # What bpftool does with an object whose .BTF.ext holds no CO-RE relocation, and what
    # generate does with any object that needs no kernel BTF.
    return (f"gobtfgen: note: {display_path(path)}: no CO-RE relocations (.BTF.ext): needs no "
            "kernel BTF, skipped")


def serve(argv: Sequence[str]) -> int | None:
    """Exit status of a plain minimize, served from a kept result or run here (run_plain), or
    None when the ordinary path must take it."""
    return _serve(argv, run=True)


def replay(argv: Sequence[str]) -> int | None:
    """Exit status of a plain minimize served from a kept result, or None."""
    return _serve(argv, run=False)


def _serve(argv: Sequence[str], *, run: bool) -> int | None:
    simple = parse_simple(argv)
    if simple is None:
        return None
    import _signal  # type: ignore[import-not-found,unused-ignore]  # signal without enum

    # SIGTERM takes Ctrl-C's clean path, as in cli.main.
    _signal.signal(_signal.SIGTERM, _signal.default_int_handler)
    from gobtfgen.fileio import write_atomic
    from gobtfgen.minimize import replay as kept

    root = kept.cache_root()
    digests = kept.object_digests(simple.objects, root)
    if digests is None:
        return None  # an object the ordinary path reports
    inputs = kept.inputs(simple.input, simple.objects, simple.minimizer, digests)
    hit = kept.lookup(inputs) if inputs is not None else None
    if hit is None:
        return run_plain(simple, digests, inputs) if run else None
    out, skipped = hit
    try:
        write_atomic(simple.output, out)
    except OSError:
        return None  # the ordinary path reports it
    for i in skipped:
        print(skipped_note(simple.objects[i]), file=sys.stderr)
    return 0


_SUFFIX = ".btf.tar.xz"  # gobtfgen.archive.SUFFIX (archive imports lzma and tarfile)


def run_plain(simple: Simple, digests: list[str], inputs: Inputs | None) -> int | None:
    """gobtfgen.commands.minimize.run for a raw kernel BTF and the built-in minimizers, with
    only the minimizer's own modules imported (argparse, the CLI, tempfile, the cache module
    and the error types cost a cold command 30-60 ms). The same steps, the same output file:
    anything that is not a success (a bad object, a damaged kernel, a relocation the
    minimizer refuses, an unwritable output) returns None before anything is printed or
    written, and the ordinary path runs the command again and reports it in its words.
    A .btf.tar.xz goes the ordinary way (xz is most of its time). digests: the objects'
    (replay.object_digests); inputs: where the result is kept, None without a cache."""
    from gobtfgen.fileio import write_atomic
    from gobtfgen.minimize import replay as kept

    if simple.input.endswith(_SUFFIX) or not kept.is_regular(simple.input):
        return None
    skipped = [i for i, d in enumerate(digests) if d == kept.SKIPPED]
    used = [o for i, o in enumerate(simple.objects) if i not in skipped]
    if inputs is not None and inputs.kernel_data is not None and inputs.kernel_sha:
        btf, kernel_sha = inputs.kernel_data, inputs.kernel_sha  # what the lookup read
    else:
        try:
            with open(simple.input, "rb") as f:
                btf = f.read()
        except OSError:
            return None
        kernel_sha = kept.file_sha256(btf)
    from gobtfgen.btf import BTFError, BTFWriter, parse_header

    try:
        little = parse_header(btf).little_endian  # archive.check_btf's checks, and more
    except BTFError:
        return None
    if not used:
        out = BTFWriter().to_bytes()  # bpftool's output for objects without relocations
    else:
        from gobtfgen.minimize import MinimizeError
        from gobtfgen.minimize.python import PythonCompatMinimizer, PythonMinimizer

        cls = PythonCompatMinimizer if simple.minimizer == "python-compat" else PythonMinimizer
        minimizer = cls()
        try:
            if any(o.little_endian != little for o in minimizer.parse_objects(used)):
                return None  # the ordinary path names the object and the fix
            index = kept.index_path(inputs.root, kernel_sha) if inputs is not None else None
            out = minimizer.minimize(simple.input, used, data=btf, index=index)
        except MinimizeError:
            return None
    try:
        write_atomic(simple.output, out)
    except OSError:
        return None
    for i in skipped:
        print(skipped_note(simple.objects[i]), file=sys.stderr)
    if inputs is not None:
        kept.store(inputs, kernel_sha, out, skipped)
    return 0
