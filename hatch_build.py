"""Builds gobtfgen/_native.c (optional compiled loops) into the wheel, or into the checkout
for an editable install.

Hatchling builds no C extensions itself, so this hook runs the C compiler Python was built
with (sysconfig's CC) on the one file. When that fails (no compiler, no Python headers) the
wheel is the pure-Python one, with a warning: gobtfgen works without the module, slower on
cold runs (gobtfgen/btf/native.py). GOBTFGEN_BUILD_NATIVE=0 skips it on purpose.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path
from typing import Any

from hatchling.builders.hooks.plugin.interface import BuildHookInterface

SOURCE = Path("gobtfgen") / "_native.c"


def compile_native(root: Path, out: Path) -> str | None:
    """Compiles SOURCE into out; returns why not, or None."""
    cc = shlex.split(sysconfig.get_config_var("CC") or "cc")
    include = sysconfig.get_paths()["include"]
    if not (Path(include) / "Python.h").exists():
        return f"no Python.h in {include} (install python3-dev)"
    cmd = [*cc, "-O2", "-fPIC", "-shared", "-Wall", "-std=c99", f"-I{include}",
           str(root / SOURCE), "-o", str(out)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    except OSError as exc:
        return f"cannot run {cc[0]} ({exc.strerror})"
    if proc.returncode != 0:
        return f"{' '.join(cmd)} failed:\n{proc.stderr.strip()}"
    return None


class NativeBuildHook(BuildHookInterface):  # type: ignore[type-arg]
    PLUGIN_NAME = "custom"

    def initialize(self, version: str, build_data: dict[str, Any]) -> None:
        if self.target_name != "wheel" or os.environ.get("GOBTFGEN_BUILD_NATIVE") == "0":
            return
        root = Path(self.root)
        name = "_native" + sysconfig.get_config_var("EXT_SUFFIX")
        if version == "editable":
            # The checkout's gobtfgen/ is what an editable install imports.
            out = root / "gobtfgen" / name
        else:
            out = Path(tempfile.mkdtemp(prefix="gobtfgen-native-")) / name
        why = compile_native(root, out)
        if why is not None:
            print(f"gobtfgen: building without the compiled module: {why}", file=sys.stderr)
            return
        build_data["pure_python"] = False
        build_data["infer_tag"] = True
        if version != "editable":
            build_data["force_include"][str(out)] = f"gobtfgen/{name}"
