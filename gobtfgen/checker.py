"""Which CO-RE relocations of which programs fail on which kernels, grouped for reading.

A relocation fails on a kernel when libbpf finds no target for it (the instruction is poisoned,
or a type size/id reads 0) or refuses it (ambiguity, an unreadable bitfield: the program does
not load). A failure is *guarded* on a kernel when the instruction is unreachable there: libbpf
patches existence checks (bpf_core_field_exists, bpf_core_type_exists, ...) into constants,
the verifier never visits the branch such a constant rules out, and a poisoned instruction in
it is harmless. `reachable` walks each program with that kernel's constants the same way. For
objects whose code cannot be walked (big-endian), a name heuristic stands in: an existence
check in the same program on the same type, or a flavour of it.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from gobtfgen.btf import BTF, BTFError, essential_name
from gobtfgen.btf.ext import (
    ENUMVAL_EXISTS,
    FIELD_EXISTS,
    RELO_KIND_NAMES,
    TYPE_EXISTS,
    TYPE_ID_TARGET,
    TYPE_MATCHES,
    TYPE_SIZE,
    CoreRelo,
    ParsedObject,
)
from gobtfgen.relocs import EXISTENCE_KINDS, TYPE_KINDS, Outcome, evaluate_object
from gobtfgen.relocs import wanted_names as _wanted

_LDX, _ST, _STX = 1, 2, 3

_GUARD_MACRO = {
    FIELD_EXISTS: "bpf_core_field_exists",
    TYPE_EXISTS: "bpf_core_type_exists",
    TYPE_MATCHES: "bpf_core_type_matches",
    ENUMVAL_EXISTS: "bpf_core_enum_value_exists",
}


@dataclass(frozen=True, kw_only=True)
class Failure:
    """One relocation that fails on one kernel."""

    object: str  # object file name
    program: str  # the function holding the instruction
    section: str
    target: str  # C view of what is accessed: `task_struct.mm.arg_start`, `enum x::Y`
    kind: str  # libbpf's relocation kind name (byte_off, type_size, ...)
    status: str  # "missing" (no target: poisoned or 0) or "refused" (libbpf errors out)
    effect: str  # what happens to the program
    guard: str | None  # the existence check that guards it, when there is one
    detail: str = ""


@dataclass(frozen=True, kw_only=True)
class KernelReport:
    kernel: str
    failures: tuple[Failure, ...] = ()
    error: str | None = None  # the kernel BTF could not be read


@dataclass(frozen=True, kw_only=True)
class Group:
    failure: Failure
    kernels: tuple[str, ...] = field(default=())

    @property
    def guarded(self) -> bool:
        return self.failure.guard is not None and self.failure.status == "missing"


# Register names of each arch's `struct pt_regs` (`user_pt_regs` on arm64) that bpf_tracing.h's
# PT_REGS_* macros read under __TARGET_ARCH_<arch>; names two arches share (sp) are left out.
_PT_REGS_NAMES = {
    "x86_64": frozenset({"di", "si", "dx", "cx", "ax", "bx", "bp", "ip", "orig_ax", "r8", "r9",
                         "r10", "r11", "r12", "r13", "r14", "r15"}),
    "arm64": frozenset({"regs", "pc", "pstate", "orig_x0", "syscallno"}),
}


def target_arch(obj: ParsedObject) -> str | None:
    """The arch an object was built for, told by the pt_regs registers it reads (kprobes built
    with __TARGET_ARCH_x86 read `di`, `si`...; arm64's pt_regs has `regs[]`); None when it
    reads none or several arches' registers."""
    btf = obj.btf
    seen: set[str] = set()
    for relo in obj.relos:
        if not 0 < relo.type_id < len(btf) or relo.kind in TYPE_KINDS:
            continue
        if btf.kind(relo.type_id) != 4 or essential_name(btf.name(relo.type_id)) not in (
                "pt_regs", "user_pt_regs"):
            continue
        path = relo.access.split(":")
        if len(path) < 2 or not path[1].isdigit():
            continue
        try:
            name = btf.str_at(btf.member(relo.type_id, int(path[1]))[0])
        except (IndexError, BTFError):
            continue
        seen.update(arch for arch, names in _PT_REGS_NAMES.items() if name in names)
    return seen.pop() if len(seen) == 1 else None


def _local_target(obj: ParsedObject, out: Outcome) -> str:
    r = out.relo
    btf = obj.btf
    if not 0 < r.type_id < len(btf):
        return f"[{r.type_id}]"
    root = btf.name(r.type_id) or "(anon)"
    if out.local is not None and r.kind not in TYPE_KINDS:
        return out.local.describe()
    kind = btf.kind(r.type_id)
    prefix = {4: "struct ", 5: "union ", 6: "enum ", 19: "enum "}.get(kind, "")
    return prefix + root


def _effect(out: Outcome) -> tuple[str, str]:
    """(status, effect) of a failing relocation."""
    if out.error is not None:
        return "refused", "libbpf refuses the relocation: the program will not load"
    kind = out.relo.kind
    if kind in (TYPE_SIZE, TYPE_ID_TARGET):
        return "missing", "reads 0"
    assert out.result is not None
    if out.result.fail_memsz_adjust:
        return "missing", ("the field's size changed incompatibly: the load is poisoned and "
                           "the program will not load if it runs there")
    return "missing", ("the instruction is poisoned: the program will not load unless the "
                       "access is unreachable")


def _failed(obj: ParsedObject, out: Outcome) -> bool:
    if out.error is not None:
        return True
    if out.relo.kind in EXISTENCE_KINDS:
        return False  # an existence check answering 0 is the guard, not a failure
    r = out.result
    if r is None:
        return True
    if r.poison:
        return True
    if r.fail_memsz_adjust:
        # libbpf checks the size adjustment only on loads and stores (bpf_core_patch_insn);
        # the same relocation on an ALU instruction (BPF_CORE_READ's pointer arithmetic) is
        # fine.
        return obj.insn_class(out.relo.section, out.relo.insn_off) in (_LDX, _ST, _STX, None)
    return not out.matches and out.relo.kind in (TYPE_SIZE, TYPE_ID_TARGET)


def _guard_key(obj: ParsedObject, relo: CoreRelo) -> str:
    btf = obj.btf
    if not 0 < relo.type_id < len(btf):
        return ""
    return essential_name(btf.name(relo.type_id))


def _guards(obj: ParsedObject, out: Outcome, guard: Outcome) -> bool:
    """Whether the existence check `guard` plausibly steers around the access `out`."""
    r, g = out.relo, guard.relo
    if g.kind in (TYPE_EXISTS, TYPE_MATCHES):
        # A type check guards accesses through that type, or another flavour of it.
        return g.type_id == r.type_id or _is_flavour(obj, r)
    if g.kind == ENUMVAL_EXISTS:
        return g.type_id == r.type_id and g.access == r.access
    if g.kind == FIELD_EXISTS:
        if g.type_id == r.type_id:
            # The same field, or a member on the way to it.
            return r.access == g.access or r.access.startswith(g.access + ":")
        # `if (bpf_core_field_exists(struct t___new, f)) ... else read struct t___old`:
        # an access through a flavoured type is steered by a check on a sibling flavour.
        return _is_flavour(obj, r)
    return False


def _is_flavour(obj: ParsedObject, relo: CoreRelo) -> bool:
    btf = obj.btf
    if not 0 < relo.type_id < len(btf):
        return False
    name = btf.name(relo.type_id)
    return essential_name(name) != name


def _guard_for(obj: ParsedObject, out: Outcome, guards: dict[tuple[str, str], list[Outcome]]
               ) -> str | None:
    """The existence check in the same program about the same type (any flavour)."""
    if out.error is not None:
        return None
    key = (out.relo.section, _guard_key(obj, out.relo))
    candidates = [g for g in guards.get(key, []) if _guards(obj, out, g)]
    if not candidates:
        return None
    # Prefer a check that answers "no" on this kernel (it steers around the access), then one
    # on the very same access.
    best = sorted(candidates, key=lambda g: (g.satisfied, g.relo.access != out.relo.access))[0]
    return f"{_GUARD_MACRO[best.relo.kind]}({_local_target(obj, best)})"


# -- reachability with the kernel's relocated constants ------------------------------------------
#
# libbpf patches an existence check into `rX = 0/1`; the compiler branches on it; the verifier
# then never visits the branch the constant rules out, so a poisoned instruction there is
# harmless. The same walk here tells a guarded failure from an unguarded one per kernel.

_MAX_STEPS = 200_000
_U64 = (1 << 64) - 1
_Reg = tuple[int | None, int | None]  # (known value, index of the relocation it came from)
_UNKNOWN: _Reg = (None, None)


def _signed(v: int, bits: int) -> int:
    return v - (1 << bits) if v >> (bits - 1) & 1 else v


def _branch(op: int, a: int, b: int, bits: int) -> bool | None:
    mask = (1 << bits) - 1
    a &= mask
    b &= mask
    sa, sb = _signed(a, bits), _signed(b, bits)
    table = {0x10: a == b, 0x20: a > b, 0x30: a >= b, 0x40: bool(a & b), 0x50: a != b,
             0x60: sa > sb, 0x70: sa >= sb, 0xA0: a < b, 0xB0: a <= b, 0xC0: sa < sb,
             0xD0: sa <= sb}
    return table.get(op)


def _alu(op: int, a: int, b: int, bits: int) -> int | None:
    mask = (1 << bits) - 1
    if op == 0x00:
        r = a + b
    elif op == 0x10:
        r = a - b
    elif op == 0x20:
        r = a * b
    elif op == 0x40:
        r = a | b
    elif op == 0x50:
        r = a & b
    elif op == 0x60:
        r = a << (b & (bits - 1))
    elif op == 0x70:
        r = (a & mask) >> (b & (bits - 1))
    elif op == 0xA0:
        r = a ^ b
    else:
        return None
    return r & mask


def reachable(code: bytes, entries: Iterable[int], consts: dict[int, tuple[int, int]]
              ) -> tuple[set[int], set[int]] | None:
    """Instructions reachable from the entries (instruction indexes) and the relocations whose
    constants decided a branch; None when the program is too big to walk.

    consts: instruction index -> (patched immediate, relocation index) for `rX = imm` and
    `rX = imm64` instructions libbpf patches.
    """
    n = len(code) // 8
    seen: set[tuple[int, tuple[_Reg, ...]]] = set()
    reached: set[int] = set()
    deciders: set[int] = set()
    start = tuple([_UNKNOWN] * 11)
    work = [(pc, start) for pc in entries]
    steps = 0
    while work:
        pc, regs = work.pop()
        while 0 <= pc < n:
            key = (pc, regs)
            if key in seen:
                break
            seen.add(key)
            steps += 1
            if steps > _MAX_STEPS:
                return None
            reached.add(pc)
            o = pc * 8
            opc = code[o]
            dst = code[o + 1] & 0x0F
            src = code[o + 1] >> 4
            off = int.from_bytes(code[o + 2:o + 4], "little", signed=True)
            imm = int.from_bytes(code[o + 4:o + 8], "little", signed=True)
            cls = opc & 0x07
            r = list(regs)
            if opc == 0x18:  # rX = imm64 (two slots)
                if pc in consts:
                    r[dst] = (consts[pc][0], consts[pc][1])
                elif o + 16 <= len(code) and src == 0:
                    hi = int.from_bytes(code[o + 12:o + 16], "little")
                    r[dst] = (((hi << 32) | (imm & 0xFFFFFFFF)) & _U64, None)
                else:
                    r[dst] = _UNKNOWN
                regs = tuple(r)
                pc += 2
                continue
            if cls in (0x04, 0x07) and dst < 11:  # ALU, ALU64
                bits = 64 if cls == 0x07 else 32
                op = opc & 0xF0
                if opc & 0x08:
                    operand: _Reg = r[src] if src < 11 else _UNKNOWN
                else:
                    operand = (consts[pc][0], consts[pc][1]) if pc in consts else (imm, None)
                if op == 0xB0:  # mov
                    val = operand[0]
                    r[dst] = (None if val is None else val & ((1 << bits) - 1), operand[1])
                elif r[dst][0] is not None and operand[0] is not None:
                    res = _alu(op, r[dst][0] or 0, operand[0] or 0, bits)
                    r[dst] = (res, r[dst][1] if r[dst][1] is not None else operand[1])
                else:
                    r[dst] = _UNKNOWN
                regs = tuple(r)
                pc += 1
                continue
            if cls in (0x05, 0x06):  # JMP, JMP32
                op = opc & 0xF0
                if op == 0x90:  # exit
                    break
                if op == 0x80:  # call
                    if src == 1:  # bpf-to-bpf call: the callee runs with unknown arguments
                        work.append((pc + imm + 1, start))
                    for reg in range(6):
                        r[reg] = _UNKNOWN
                    regs = tuple(r)
                    pc += 1
                    continue
                if op == 0x00:  # ja
                    pc += (imm if cls == 0x06 else off) + 1
                    continue
                bits = 64 if cls == 0x05 else 32
                a = r[dst] if dst < 11 else _UNKNOWN
                b: _Reg = (r[src] if src < 11 else _UNKNOWN) if opc & 0x08 else (imm, None)
                taken = None
                if a[0] is not None and b[0] is not None:
                    taken = _branch(op, a[0], b[0], bits)
                if taken is None:
                    work.append((pc + off + 1, regs))
                    pc += 1
                    continue
                for origin in (a[1], b[1]):
                    if origin is not None:
                        deciders.add(origin)
                pc = pc + off + 1 if taken else pc + 1
                continue
            if cls == 0x01 and dst < 11:  # LDX
                r[dst] = _UNKNOWN
            elif cls == 0x03 and opc & 0xE0 == 0xC0:  # atomic: may write src and r0
                if src < 11:
                    r[src] = _UNKNOWN
                r[0] = _UNKNOWN
            regs = tuple(r)
            pc += 1
    return reached, deciders


_MOV_IMM = frozenset({0xB7, 0xB4, 0x18})


def _section_reach(obj: ParsedObject, section: str, outs: Sequence[Outcome]
                   ) -> tuple[set[int], dict[int, Outcome]] | None:
    code = obj.code.get(section)
    if code is None or not obj.little_endian:
        return None
    consts: dict[int, tuple[int, int]] = {}
    for i, out in enumerate(outs):
        pc = out.relo.insn_off // 8
        if out.relo.section != section or pc * 8 + 8 > len(code):
            continue
        if code[pc * 8] in _MOV_IMM and out.error is None and out.result is not None \
                and not out.result.poison:
            consts[pc] = (out.result.new_val, i)
    entries = [value // 8 for sec, value, _ in obj.symbols if sec == section]
    walked = reachable(code, entries or [0], consts)
    if walked is None:
        return None
    reached, deciders = walked
    return reached, {i: outs[i] for i in deciders}


def check_kernel(kernel: str, raw: bytes, objects: Sequence[ParsedObject], *,
                 index_file: Path | None = None) -> KernelReport:
    """index_file: where the kernel's type index is kept (read when valid, else written)."""
    try:
        return _check_kernel(kernel, raw, objects, index_file)
    except BTFError as exc:
        return KernelReport(kernel=kernel, error=f"kernel BTF: {exc}")
    except IndexError:
        return KernelReport(kernel=kernel,
                            error="kernel BTF: a type refers to a type id past the end")


def _check_kernel(kernel: str, raw: bytes, objects: Sequence[ParsedObject],
                  index_file: Path | None) -> KernelReport:
    from gobtfgen.btf import index as btf_index

    tb = BTF(raw, wanted=_wanted(objects), index=btf_index.load(index_file, raw))
    btf_index.store(index_file, tb)
    failures: list[Failure] = []
    for obj in objects:
        outs = list(evaluate_object(obj, tb))
        guards: dict[tuple[str, str], list[Outcome]] = {}
        for out in outs:
            if out.relo.kind in _GUARD_MACRO and out.error is None:
                guards.setdefault((out.relo.section, _guard_key(obj, out.relo)), []).append(out)
        reach: dict[str, tuple[set[int], dict[int, Outcome]] | None] = {}
        for out in outs:
            if not _failed(obj, out):
                continue
            sec = out.relo.section
            if sec not in reach:
                reach[sec] = _section_reach(obj, sec, outs)
            status, effect = _effect(out)
            if out.error is not None:
                guard = None  # libbpf refuses the whole program, reachable or not
            elif reach[sec] is not None:
                guard = _cfg_guard(obj, out, reach[sec])
            else:
                guard = _guard_for(obj, out, guards)  # no code to walk: name heuristic
            failures.append(Failure(
                object=obj.name, program=obj.function_at(sec, out.relo.insn_off),
                section=sec, target=_local_target(obj, out),
                kind=RELO_KIND_NAMES.get(out.relo.kind, str(out.relo.kind)), status=status,
                effect=effect, guard=guard, detail=out.error or ""))
    return KernelReport(kernel=kernel, failures=tuple(_dedup(failures)))


def _cfg_guard(obj: ParsedObject, out: Outcome,
               reach: tuple[set[int], dict[int, Outcome]] | None) -> str | None:
    """The check that makes the failing instruction unreachable on this kernel, if any."""
    assert reach is not None
    reached, deciders = reach
    if out.relo.insn_off // 8 in reached:
        return None
    if not deciders:
        return "code that never reaches it"
    key = _guard_key(obj, out.relo)
    ranked = sorted(deciders.values(), key=lambda g: (_guard_key(obj, g.relo) != key,
                                                      g.relo.kind not in _GUARD_MACRO,
                                                      g.relo.index))
    best = ranked[0]
    macro = _GUARD_MACRO.get(best.relo.kind, "a CO-RE constant")
    return f"{macro}({_local_target(obj, best)})"


def _dedup(failures: Iterable[Failure]) -> list[Failure]:
    seen: set[Failure] = set()
    out = []
    for f in failures:
        # One access read several ways (offset, size, shifts) is one line for the reader.
        key = Failure(object=f.object, program=f.program, section=f.section, target=f.target,
                      kind="", status=f.status, effect=f.effect, guard=f.guard)
        if key in seen:
            continue
        seen.add(key)
        out.append(f)
    return out


def group(reports: Sequence[KernelReport]) -> list[Group]:
    by: dict[tuple[object, ...], tuple[Failure, list[str]]] = {}
    for rep in reports:
        for f in rep.failures:
            key = (f.object, f.program, f.target, f.status, f.guard is not None)
            if key not in by:
                by[key] = (f, [])
            if rep.kernel not in by[key][1]:
                by[key][1].append(rep.kernel)
    groups = [Group(failure=f, kernels=tuple(sorted(ks))) for f, ks in by.values()]
    groups.sort(key=lambda g: (g.guarded, g.failure.object, g.failure.program, -len(g.kernels),
                               g.failure.target))
    return groups


def has_unguarded(groups: Sequence[Group]) -> bool:
    return any(not g.guarded for g in groups)


def _kernel_list(kernels: Sequence[str], limit: int = 4) -> str:
    shown = ", ".join(kernels[:limit])
    return shown + (f" and {len(kernels) - limit} more" if len(kernels) > limit else "")


def fold_kernels(kernels: Sequence[str], limit: int = 6) -> str:
    """Kernels folded by distro, version and arch: `ubuntu/20.04/x86_64 (9), amzn/2/...`."""
    by: dict[str, list[str]] = {}
    for k in sorted(kernels):
        by.setdefault(k.rsplit("/", 1)[0] if k.count("/") >= 3 else k, []).append(k)
    parts = [ks[0] if len(ks) == 1 else f"{prefix} ({len(ks)})" for prefix, ks in by.items()]
    shown = ", ".join(parts[:limit])
    return shown + (f" and {len(parts) - limit} more groups" if len(parts) > limit else "")


def failing_kernels(reports: Sequence[KernelReport]) -> list[str]:
    """Kernels where some program will not load or reads garbage: an unguarded failure."""
    return sorted(r.kernel for r in reports if r.error is None and any(
        f.guard is None or f.status != "missing" for f in r.failures))


def _root_type(target: str) -> str:
    """`task_struct` of `task_struct.mm.arg_start`, `enum pid_type` of `enum pid_type::X`."""
    return target.split("::")[0].split(".")[0].split("[")[0]


def _compact(groups: Sequence[Group]) -> list[str]:
    """Unguarded failures by missing type: one line each, kernels folded."""
    by: dict[tuple[str, str], list[Group]] = {}
    for g in groups:
        if not g.guarded:
            by.setdefault((_root_type(g.failure.target), g.failure.status), []).append(g)
    lines = []
    for (_root, status), gs in sorted(by.items(), key=lambda kv: (-len({k for g in kv[1]
                                                                       for k in g.kernels}),
                                                                 kv[0])):
        kernels = sorted({k for g in gs for k in g.kernels})
        targets = sorted({g.failure.target for g in gs})
        progs = sorted({f"{g.failure.program} ({g.failure.object})" for g in gs})
        what = ", ".join(f"`{t}`" for t in targets[:3]) + (
            f" and {len(targets) - 3} more" if len(targets) > 3 else "")
        reasons = sorted({g.failure.detail.split(":")[0] for g in gs if g.failure.detail})
        verb = (f"refused by libbpf ({', '.join(reasons) or 'error'}: the program will not load)"
                if status == "refused" else "missing, unguarded (the load is poisoned)")
        lines.append(f"FAIL {len(kernels)} kernel{'s' if len(kernels) != 1 else ''}: {what} "
                     f"{verb}, in {', '.join(progs[:3])}"
                     + (f" and {len(progs) - 3} more programs" if len(progs) > 3 else ""))
        lines.append("       " + fold_kernels(kernels))
    guarded = [g for g in groups if g.guarded]
    if guarded:
        on = {k for g in guarded for k in g.kernels}
        lines.append(f"ok   {len(guarded)} guarded failure(s) on {len(on)} kernel(s): "
                     "the program checks existence first, fine (--verbose lists them)")
    return lines


def format_human(reports: Sequence[KernelReport], objects: Sequence[ParsedObject],
                 *, verbose: bool = False, notes: Sequence[str] = ()) -> str:
    groups = group(reports)
    checked = [r for r in reports if r.error is None]
    lines = [f"gobtfgen check: {len(checked)} kernels, {len(objects)} objects, "
             f"{sum(len(o.relos) for o in objects)} CO-RE relocations"]
    lines += [f"  note: {n}" for n in notes]
    for r in reports:
        if r.error is not None:
            lines.append(f"  warning: {r.kernel}: not checked: {r.error}")
    if not groups:
        lines.append(f"every relocation is satisfied on all {len(checked)} kernels")
        return "\n".join(lines) + "\n"
    if verbose:
        lines += _detailed(groups)
    else:
        lines += _compact(groups)
    bad = failing_kernels(reports)
    last = (f"{len(checked) - len(bad)} of {len(checked)} kernels run every program correctly "
            "(guarded failures count as correct)")
    if len(bad) == len(checked) > 1 and not verbose:
        last += f"; all {len(bad)} have an unguarded failure above"
    elif bad:
        last += f"; {len(bad)} do not: " + (", ".join(bad) if verbose else fold_kernels(bad))
    lines.append(last)
    return "\n".join(lines) + "\n"


def _detailed(groups: Sequence[Group]) -> list[str]:
    lines = []
    for g in groups:
        f = g.failure
        n = len(g.kernels)
        kernels = "kernel" if n == 1 else "kernels"
        where = f"in `{f.program}` ({f.object})"
        if f.status == "refused":
            head = (f"{n} {kernels}: `{f.target}` ({f.kind}) {where}: {f.effect}"
                    f" [{f.detail}]")
            tag = "FAIL "
        elif g.guarded:
            lack = "lacks" if n == 1 else "lack"
            head = f"{n} {kernels} {lack} `{f.target}`, guarded by `{f.guard}` {where}, fine"
            tag = "ok   "
        else:
            verb = "mismatch" if "size changed" in f.effect else "lack"
            verb += "es" if n == 1 and verb == "mismatch" else "s" if n == 1 else ""
            head = f"{n} {kernels} {verb} `{f.target}` ({f.kind}), unguarded {where}: {f.effect}"
            tag = "FAIL "
        lines.append(tag + head)
        lines.append("       " + ", ".join(g.kernels))
    return lines


def format_json(reports: Sequence[KernelReport], objects: Sequence[ParsedObject], *,
                notes: Sequence[str] = ()) -> str:
    groups = group(reports)
    doc = {
        "kernels": [r.kernel for r in reports if r.error is None],
        "unreadable": [{"kernel": r.kernel, "error": r.error} for r in reports if r.error],
        "objects": [str(o.path) for o in objects],
        "failures": [{
            "object": g.failure.object, "program": g.failure.program,
            "section": g.failure.section, "target": g.failure.target, "kind": g.failure.kind,
            "status": g.failure.status, "guarded": g.guarded, "guard": g.failure.guard,
            "effect": g.failure.effect, "detail": g.failure.detail,
            "kernels": list(g.kernels)} for g in groups],
        "ok": not has_unguarded(groups),
        "failing_kernels": failing_kernels(reports),
        "notes": list(notes),
    }
    return json.dumps(doc, indent=2, sort_keys=True) + "\n"
