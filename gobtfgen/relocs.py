"""libbpf's CO-RE rules (relo_core.c), in Python: candidates, matching, per-kind results.

This follows libbpf 1.0/1.1 (the one bpftool 7.1 links) function by function, because the
compatible minimizer must fail exactly where bpftool fails and mark exactly what it marks, and
the fixed minimizer must preserve every result a loader computes against the full kernel BTF.
Names in comments refer to the C functions so a reader can hold both side by side.
"""

from __future__ import annotations

import errno

from gobtfgen import btf as B
from gobtfgen.btf import BTF, BTFError, essential_name, essential_name_len
from gobtfgen.btf.ext import (
    ENUMVAL_EXISTS,
    ENUMVAL_VALUE,
    FIELD_BYTE_OFFSET,
    FIELD_BYTE_SIZE,
    FIELD_EXISTS,
    FIELD_LSHIFT_U64,
    FIELD_RSHIFT_U64,
    FIELD_SIGNED,
    RELO_KIND_NAMES,
    TYPE_EXISTS,
    TYPE_ID_LOCAL,
    TYPE_ID_TARGET,
    TYPE_MATCHES,
    TYPE_SIZE,
    CoreRelo,
    ParsedObject,
)
from gobtfgen.record import Record

# `gobtfgen minimize` imports this module in every process: collections.abc (not the
# _collections_abc os has loaded) costs it 2-4 ms. typing.TYPE_CHECKING without importing
# typing (mypy reads this name).
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator, Sequence

SPEC_MAX_LEN = 64  # BPF_CORE_SPEC_MAX_LEN
MAX_RESOLVE_DEPTH = 32
U64 = (1 << 64) - 1

FIELD_KINDS = frozenset({FIELD_BYTE_OFFSET, FIELD_BYTE_SIZE, FIELD_EXISTS, FIELD_SIGNED,
                         FIELD_LSHIFT_U64, FIELD_RSHIFT_U64})
TYPE_KINDS = frozenset({TYPE_ID_LOCAL, TYPE_ID_TARGET, TYPE_EXISTS, TYPE_MATCHES, TYPE_SIZE})
ENUMVAL_KINDS = frozenset({ENUMVAL_EXISTS, ENUMVAL_VALUE})
# Relocation kinds whose only job is to say whether something exists: a failing target is
# their normal answer, and they are what guards other relocations.
EXISTENCE_KINDS = frozenset({FIELD_EXISTS, TYPE_EXISTS, TYPE_MATCHES, ENUMVAL_EXISTS})


class CoreError(Exception):
    """A relocation libbpf refuses (it fails the program load; bpftool aborts the run)."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


class _Poison(Exception):
    """libbpf's -EUCLEAN: the instruction gets poisoned."""


# -- type helpers ------------------------------------------------------------------------------


def is_composite(kind: int) -> bool:
    return kind in (B.STRUCT, B.UNION)


def is_any_enum(kind: int) -> bool:
    return kind in (B.ENUM, B.ENUM64)


def kind_core_compat(k1: int, k2: int) -> bool:
    """btf_kind_core_compat: the same kind, or enum and enum64."""
    return k1 == k2 or (is_any_enum(k1) and is_any_enum(k2))


_MAX_CHAIN = 64


def skip_mods_and_typedefs(btf: BTF, tid: int) -> int:
    # libbpf trusts the chain to end; a damaged BTF can loop, which must fail one kernel,
    # not hang the run.
    kind = btf.kind(tid)
    for _ in range(_MAX_CHAIN):
        if kind not in B.MODS and kind != B.TYPEDEF:
            return tid
        tid = btf.ref(tid)
        kind = btf.kind(tid)
    raise BTFError(f"type {tid}: a typedef/modifier chain loops")


def resolve_size(btf: BTF, tid: int) -> int:
    """btf__resolve_size; raises CoreError(EINVAL/E2BIG) where libbpf returns an error."""
    nelems = 1
    size = -1
    for _ in range(MAX_RESOLVE_DEPTH):
        if tid == 0:
            break
        kind = btf.kind(tid)
        if kind in (B.INT, B.STRUCT, B.UNION, B.ENUM, B.ENUM64, B.DATASEC, B.FLOAT):
            size = btf.size(tid)
            break
        if kind == B.PTR:
            size = btf.ptr_size
            break
        if kind in (B.TYPEDEF, B.VOLATILE, B.CONST, B.RESTRICT, B.VAR, B.DECL_TAG, B.TYPE_TAG):
            tid = btf.ref(tid)
            continue
        if kind == B.ARRAY:
            elem, _, n = btf.array(tid)
            if nelems and n > 0xFFFFFFFF // nelems:
                raise CoreError(errno.E2BIG, f"array size overflow at type {tid}")
            nelems *= n
            tid = elem
            continue
        raise CoreError(errno.EINVAL, f"cannot size {B.KIND_NAMES.get(kind)} type {tid}")
    if size < 0:
        raise CoreError(errno.EINVAL, f"cannot size type {tid}")
    if nelems and size > 0xFFFFFFFF // nelems:
        raise CoreError(errno.E2BIG, f"type {tid} is too big")
    return nelems * size


# -- specs -------------------------------------------------------------------------------------


class Accessor(Record):
    __slots__ = ("type_id", "idx", "name")

    def __init__(self, type_id: int, idx: int, name: str | None) -> None:
        self.type_id = type_id
        self.idx = idx
        self.name = name


class Spec(Record):
    """bpf_core_spec: the high-level accessors, the raw access path and the bit offset.
    (Mutable, unlike the other records: the matching builds it up.)"""

    __slots__ = ("btf", "root_type_id", "relo_kind", "raw_spec", "spec", "bit_offset", "quirk")
    __hash__ = None  # type: ignore[assignment]

    def __init__(self, btf: BTF, root_type_id: int, relo_kind: int,
                 raw_spec: list[int] | None = None, spec: list[Accessor] | None = None,
                 bit_offset: int = 0, quirk: bool = False) -> None:
        self.btf = btf
        self.root_type_id = root_type_id
        self.relo_kind = relo_kind
        self.raw_spec = [] if raw_spec is None else raw_spec
        self.spec = [] if spec is None else spec
        self.bit_offset = bit_offset
        # libbpf's bookkeeping went astray (see _match_member): raw_spec may not be a path.
        self.quirk = quirk

    def copy(self) -> Spec:
        return Spec(self.btf, self.root_type_id, self.relo_kind, list(self.raw_spec),
                    list(self.spec), self.bit_offset, self.quirk)

    def format(self) -> str:
        """bpf_core_format_spec, byte for byte (libbpf's debug log prints it)."""
        btf = self.btf
        tid = self.root_type_id
        name = btf.name(tid) if tid < len(btf) else ""
        out = (f"<{RELO_KIND_NAMES.get(self.relo_kind, 'unknown')}> [{tid}] "
               f"{B.KIND_NAMES.get(btf.kind(tid), 'unknown').lower()} {name or '<anon>'}")
        if self.relo_kind in TYPE_KINDS:
            return out
        if self.relo_kind in ENUMVAL_KINDS:
            t = skip_mods_and_typedefs(btf, tid)
            values = btf.enum_values(t)
            # A non-matching candidate's raw_spec is empty and libbpf's zeroed array makes it
            # print the first enumerator.
            idx = self.raw_spec[0] if self.raw_spec else 0
            if idx >= len(values):
                return out + "::?"
            name_off, val = values[idx]
            if btf.kind(t) == B.ENUM:
                val &= 0xFFFFFFFF
                if btf.kflag(t) and val & 0x80000000:
                    val -= 1 << 32
            elif btf.kflag(t) and val & (1 << 63):
                val -= 1 << 64
            return out + f"::{btf.str_at(name_off)} = {val}"
        for i, acc in enumerate(self.spec):
            if acc.name:
                out += "." + acc.name
            elif i > 0 or acc.idx > 0:
                out += f"[{acc.idx}]"
        out += " (" + ":".join(str(x) for x in self.raw_spec)
        if self.bit_offset % 8:
            return out + f" @ offset {self.bit_offset // 8}.{self.bit_offset % 8})"
        return out + f" @ offset {self.bit_offset // 8})"

    def describe(self) -> str:
        """bpf_core_format_spec's C view of the access: `task_struct.mm.arg_start`."""
        btf = self.btf
        root = btf.name(self.root_type_id) or "<anon>"
        if self.relo_kind in TYPE_KINDS:
            return root
        if self.relo_kind in ENUMVAL_KINDS:
            t = skip_mods_and_typedefs(btf, self.root_type_id)
            idx = self.raw_spec[0]
            return f"{root}::{btf.str_at(btf.enum_values(t)[idx][0])}"
        out = root
        for i, acc in enumerate(self.spec):
            if acc.name:
                out += "." + acc.name
            elif i > 0 or acc.idx > 0:
                out += f"[{acc.idx}]"
        return out


def parse_spec(btf: BTF, relo: CoreRelo) -> Spec:
    """bpf_core_parse_spec; raises CoreError on a malformed access string."""
    s = relo.access
    if not s or s[0] == ":":
        raise CoreError(errno.EINVAL, f"bad access string {s!r}")
    spec = Spec(btf, relo.type_id, relo.kind)
    if relo.kind in TYPE_KINDS:
        if s != "0":
            raise CoreError(errno.EINVAL, f"bad access string {s!r} for a type relocation")
        return spec
    raw: list[int] = []
    for part in s.split(":"):
        if not part:
            continue
        try:
            raw.append(int(part))
        except ValueError:
            raise CoreError(errno.EINVAL, f"bad access string {s!r}") from None
        if len(raw) > SPEC_MAX_LEN:
            raise CoreError(errno.E2BIG, f"access string {s!r} is too deep")
    if not raw:
        raise CoreError(errno.EINVAL, f"bad access string {s!r}")
    spec.raw_spec = raw
    if relo.type_id >= len(btf):
        raise CoreError(errno.EINVAL, f"local type {relo.type_id} does not exist")
    tid = skip_mods_and_typedefs(btf, relo.type_id)
    access_idx = raw[0]
    kind = btf.kind(tid)
    if relo.kind in ENUMVAL_KINDS:
        if not is_any_enum(kind) or len(raw) > 1 or access_idx >= btf.vlen(tid):
            raise CoreError(errno.EINVAL, f"bad enum access {s!r}")
        name = btf.str_at(btf.enum_values(tid)[access_idx][0])
        spec.spec.append(Accessor(tid, access_idx, name))
        return spec
    if relo.kind not in FIELD_KINDS:
        raise CoreError(errno.EINVAL, f"unknown relocation kind {relo.kind}")
    spec.spec.append(Accessor(tid, access_idx, None))
    sz = resolve_size(btf, tid)
    spec.bit_offset = access_idx * sz * 8
    for i in range(1, len(raw)):
        tid = skip_mods_and_typedefs(btf, tid)
        access_idx = raw[i]
        kind = btf.kind(tid)
        if is_composite(kind):
            if access_idx >= btf.vlen(tid):
                raise CoreError(errno.EINVAL, f"member {access_idx} of type {tid} is missing")
            spec.bit_offset += btf.member_bit_offset(tid, access_idx)
            name_off, mtype, _ = btf.member(tid, access_idx)
            if name_off:
                name = btf.str_at(name_off)
                if not name:
                    raise CoreError(errno.EINVAL, "member with an empty name")
                spec.spec.append(Accessor(tid, access_idx, name))
            tid = mtype
        elif kind == B.ARRAY:
            elem, _, nelems = btf.array(tid)
            tid = skip_mods_and_typedefs(btf, elem)
            flex = _is_flex_arr(btf, spec.spec[-1], nelems)
            if not flex and access_idx >= nelems:
                raise CoreError(errno.EINVAL, f"array index {access_idx} out of bounds")
            spec.spec.append(Accessor(tid, access_idx, None))
            spec.bit_offset += access_idx * resolve_size(btf, tid) * 8
        else:
            raise CoreError(errno.EINVAL,
                            f"access {s!r} captures type {tid} of kind {B.KIND_NAMES.get(kind)}")
    return spec


def _is_flex_arr(btf: BTF, acc: Accessor, nelems: int) -> bool:
    """is_flex_arr: a zero-length array that is the last member of its struct."""
    if not acc.name or nelems > 0:
        return False
    return acc.idx == btf.vlen(acc.type_id) - 1


# -- compatibility -----------------------------------------------------------------------------


def _names_essentially_equal(a: str, b: str) -> bool:
    la = essential_name_len(a)
    return la == essential_name_len(b) and a[:la] == b[:la]


def fields_are_compat(lb: BTF, lid: int, tb: BTF, tid: int) -> bool:
    """bpf_core_fields_are_compat."""
    for _ in range(_MAX_CHAIN):
        lid = skip_mods_and_typedefs(lb, lid)
        tid = skip_mods_and_typedefs(tb, tid)
        lk, tk = lb.kind(lid), tb.kind(tid)
        if is_composite(lk) and is_composite(tk):
            return True
        if not kind_core_compat(lk, tk):
            return False
        if lk in (B.PTR, B.FLOAT):
            return True
        if lk in (B.FWD, B.ENUM, B.ENUM64):
            ln, tn = lb.name(lid), tb.name(tid)
            ll, tl = essential_name_len(ln), essential_name_len(tn)
            return ll == 0 or tl == 0 or (ll == tl and ln[:ll] == tn[:tl])
        if lk == B.INT:
            return lb.int_offset(lid) == 0 and tb.int_offset(tid) == 0
        if lk == B.ARRAY:
            lid = lb.array(lid)[0]
            tid = tb.array(tid)[0]
            continue
        return False
    raise BTFError(f"type {tid}: an array chain loops")


def types_are_compat(lb: BTF, lid: int, tb: BTF, tid: int, level: int = 32) -> int:
    """__bpf_core_types_are_compat: 1 compatible, 0 not; CoreError when too deep."""
    if not kind_core_compat(lb.kind(lid), tb.kind(tid)):
        return 0
    depth = 32
    while True:
        depth -= 1
        if depth < 0:
            raise CoreError(errno.EINVAL, "type compatibility check is too deep")
        lid = skip_mods_and_typedefs(lb, lid)
        tid = skip_mods_and_typedefs(tb, tid)
        lk, tk = lb.kind(lid), tb.kind(tid)
        if not kind_core_compat(lk, tk):
            return 0
        if lk in (B.UNKN, B.STRUCT, B.UNION, B.ENUM, B.FWD, B.ENUM64):
            return 1
        if lk == B.INT:
            return int(lb.int_offset(lid) == 0 and tb.int_offset(tid) == 0)
        if lk == B.PTR:
            lid, tid = lb.ref(lid), tb.ref(tid)
            continue
        if lk == B.ARRAY:
            lid, tid = lb.array(lid)[0], tb.array(tid)[0]
            continue
        if lk == B.FUNC_PROTO:
            lps, tps = lb.params(lid), tb.params(tid)
            if len(lps) != len(tps):
                return 0
            for (_, lp), (_, tp) in zip(lps, tps, strict=True):
                if level <= 0:
                    raise CoreError(errno.EINVAL, "type compatibility check is too deep")
                r = types_are_compat(lb, skip_mods_and_typedefs(lb, lp), tb,
                                     skip_mods_and_typedefs(tb, tp), level - 1)
                if r <= 0:
                    return r
            lid = skip_mods_and_typedefs(lb, lb.ref(lid))
            tid = skip_mods_and_typedefs(tb, tb.ref(tid))
            continue
        return 0


def _names_match(lb: BTF, l_off: int, tb: BTF, t_off: int) -> bool:
    """bpf_core_names_match."""
    ln, tn = lb.str_at(l_off), tb.str_at(t_off)
    if not tn:
        return not ln
    return _names_essentially_equal(ln, tn)


def _enums_match(lb: BTF, lid: int, tb: BTF, tid: int) -> int:
    if lb.size(lid) != tb.size(tid):
        return 0
    lvals, tvals = lb.enum_values(lid), tb.enum_values(tid)
    if len(lvals) > len(tvals):
        return 0
    for l_off, _ in lvals:
        if not any(_names_match(lb, l_off, tb, t_off) for t_off, _ in tvals):
            return 0
    return 1


def _composites_match(lb: BTF, lid: int, tb: BTF, tid: int, behind_ptr: bool,
                      level: int) -> int:
    lms, tms = lb.members(lid), tb.members(tid)
    if len(lms) > len(tms):
        return 0
    for l_name, l_type, _ in lms:
        matched = False
        for t_name, t_type, _ in tms:
            if not _names_match(lb, l_name, tb, t_name):
                continue
            r = types_match(lb, l_type, tb, t_type, behind_ptr, level - 1)
            if r > 0:
                matched = True
                break
        if not matched:
            return 0
    return 1


def types_match(lb: BTF, lid: int, tb: BTF, tid: int, behind_ptr: bool = False,
                level: int = 32) -> int:
    """__bpf_core_types_match (TYPE_MATCHES)."""
    if level <= 0:
        raise CoreError(errno.EINVAL, "type match check is too deep")
    depth = 32
    while True:
        depth -= 1
        if depth < 0:
            raise CoreError(errno.EINVAL, "type match check is too deep")
        lid = skip_mods_and_typedefs(lb, lid)
        tid = skip_mods_and_typedefs(tb, tid)
        if not _names_match(lb, lb.name_off(lid), tb, tb.name_off(tid)):
            return 0
        lk, tk = lb.kind(lid), tb.kind(tid)
        if lk == B.UNKN:
            return int(lk == tk)
        if lk == B.FWD:
            lf = lb.kflag(lid)
            if behind_ptr:
                if lk == tk:
                    return int(lf == tb.kflag(tid))
                return int((tk == B.STRUCT and not lf) or (tk == B.UNION and lf))
            return int(lk == tk and lf == tb.kflag(tid))
        if lk in (B.ENUM, B.ENUM64):
            if not is_any_enum(tk):
                return 0
            return _enums_match(lb, lid, tb, tid)
        if lk in (B.STRUCT, B.UNION):
            if behind_ptr:
                if lk == tk:
                    return 1
                if tk != B.FWD:
                    return 0
                return int((lk == B.UNION) == tb.kflag(tid))
            if lk != tk:
                return 0
            return _composites_match(lb, lid, tb, tid, behind_ptr, level)
        if lk == B.INT:
            if lk != tk:
                return 0
            ls = lb.int_encoding(lid) & B.INT_SIGNED
            ts = tb.int_encoding(tid) & B.INT_SIGNED
            return int(lb.size(lid) == tb.size(tid) and ls == ts)
        if lk == B.PTR:
            if lk != tk:
                return 0
            behind_ptr = True
            lid, tid = lb.ref(lid), tb.ref(tid)
            continue
        if lk == B.ARRAY:
            if lk != tk:
                return 0
            le, _, ln = lb.array(lid)
            te, _, tn = tb.array(tid)
            if ln != tn:
                return 0
            lid, tid = le, te
            continue
        if lk == B.FUNC_PROTO:
            if lk != tk:
                return 0
            lps, tps = lb.params(lid), tb.params(tid)
            if len(lps) != len(tps):
                return 0
            for (_, lp), (_, tp) in zip(lps, tps, strict=True):
                r = types_match(lb, lp, tb, tp, behind_ptr, level - 1)
                if r <= 0:
                    return r
            lid, tid = lb.ref(lid), tb.ref(tid)
            continue
        return 0


# -- matching a spec against a candidate -------------------------------------------------------


def _match_member(lb: BTF, local_acc: Accessor, tb: BTF, tid: int,
                  spec: Spec, depth: int = 0) -> tuple[int, int]:
    """bpf_core_match_member: (found, next target type id).

    libbpf pushes every member speculatively and pops it when it is not the one; for a named
    member that does not match, push and pop cancel out, so only anonymous members (searched
    recursively) and the matching one touch the spec here. That keeps libbpf's exact spec
    state, including its quirk: a same-named but incompatible member inside an anonymous one
    returns without popping its own entry, and the caller then pops one entry, not its own.
    """
    tid = skip_mods_and_typedefs(tb, tid)
    if not is_composite(tb.kind(tid)):
        return 0, 0
    l_name_off, l_type, _ = lb.member(local_acc.type_id, local_acc.idx)
    local_name = lb.str_at(l_name_off)
    members = tb.named_members(tid)
    if members and len(spec.raw_spec) == SPEC_MAX_LEN:
        raise CoreError(errno.E2BIG, "struct nesting is too deep")
    raw = spec.raw_spec
    for i, (targ_name, t_type, bit_offset) in enumerate(members):
        if not targ_name:
            spec.bit_offset += bit_offset
            raw.append(i)
            found, nxt = _match_member(lb, local_acc, tb, t_type, spec, depth + 1)
            if found:
                return found, nxt
            spec.bit_offset -= bit_offset
            raw.pop()
        elif targ_name == local_name:
            spec.bit_offset += bit_offset
            raw.append(i)
            spec.spec.append(Accessor(tid, i, targ_name))
            if fields_are_compat(lb, l_type, tb, t_type):
                return 1, t_type
            spec.spec.pop()
            if depth:
                spec.quirk = True  # our caller will pop our entry instead of its own
            return 0, t_type
    return 0, 0


def spec_match(local: Spec, tb: BTF, targ_id: int) -> tuple[int, Spec]:
    """bpf_core_spec_match: (1 matched / 0 not, target spec)."""
    targ = Spec(tb, targ_id, local.relo_kind)
    lb = local.btf
    kind = local.relo_kind
    if kind in TYPE_KINDS:
        if kind == TYPE_MATCHES:
            return types_match(lb, local.root_type_id, tb, targ_id), targ
        return types_are_compat(lb, local.root_type_id, tb, targ_id), targ
    if kind in ENUMVAL_KINDS:
        tid = skip_mods_and_typedefs(tb, targ_id)
        if not is_any_enum(tb.kind(tid)):
            return 0, targ
        lname = local.spec[0].name or ""
        ll = essential_name_len(lname)
        for i, (name_off, _) in enumerate(tb.enum_values(tid)):
            tname = tb.str_at(name_off)
            if essential_name_len(tname) != ll:
                continue
            if tname[:ll] == lname[:ll]:
                targ.spec.append(Accessor(tid, i, tname))
                targ.raw_spec.append(i)
                return 1, targ
        return 0, targ
    if kind not in FIELD_KINDS:
        raise CoreError(errno.EINVAL, f"unknown relocation kind {kind}")
    tid = targ_id
    for i, lacc in enumerate(local.spec):
        tid = skip_mods_and_typedefs(tb, tid)
        if lacc.name:
            found, tid = _match_member(lb, lacc, tb, tid, targ)
            if found <= 0:
                return found, targ
        else:
            if i > 0:
                if tb.kind(tid) != B.ARRAY:
                    return 0, targ
                elem, _, nelems = tb.array(tid)
                flex = _is_flex_arr(tb, targ.spec[-1], nelems)
                if not flex and lacc.idx >= nelems:
                    return 0, targ
                tid = skip_mods_and_typedefs(tb, elem)
            if len(targ.raw_spec) == SPEC_MAX_LEN:
                raise CoreError(errno.E2BIG, "access path is too deep")
            targ.spec.append(Accessor(tid, lacc.idx, None))
            targ.raw_spec.append(lacc.idx)
            targ.bit_offset += lacc.idx * resolve_size(tb, tid) * 8
    return 1, targ


# -- per-kind results --------------------------------------------------------------------------


class RelocResult(Record):
    """bpf_core_relo_res: what the loader writes into the instruction."""

    __slots__ = ("poison", "orig_val", "new_val", "validate", "orig_sz", "new_sz",
                 "orig_type_id", "new_type_id", "fail_memsz_adjust")

    def __init__(self, *, poison: bool, orig_val: int, new_val: int, validate: bool,
                 orig_sz: int = 0, new_sz: int = 0, orig_type_id: int = 0, new_type_id: int = 0,
                 fail_memsz_adjust: bool = False) -> None:
        self.poison = poison
        self.orig_val = orig_val
        self.new_val = new_val
        self.validate = validate
        self.orig_sz = orig_sz
        self.new_sz = new_sz
        self.orig_type_id = orig_type_id
        self.new_type_id = new_type_id
        self.fail_memsz_adjust = fail_memsz_adjust


def _calc_field(kind: int, spec: Spec | None) -> tuple[int, int, int, bool]:
    """bpf_core_calc_field_relo: (val, field_sz, type_id, validate)."""
    if kind == FIELD_EXISTS:
        return (1 if spec else 0), 0, 0, True
    if spec is None:
        raise _Poison()
    btf = spec.btf
    acc = spec.spec[-1]
    if not acc.name:
        try:
            sz = resolve_size(btf, acc.type_id)
        except CoreError:
            raise CoreError(errno.EINVAL, "cannot size array element") from None
        if kind == FIELD_BYTE_OFFSET:
            return spec.bit_offset // 8, sz, acc.type_id, True
        if kind == FIELD_BYTE_SIZE:
            return sz, 0, 0, True
        raise CoreError(errno.EINVAL,
                        f"relocation {RELO_KIND_NAMES.get(kind)} can't be applied to an array")
    _, mtype, _ = btf.member(acc.type_id, acc.idx)
    mt = skip_mods_and_typedefs(btf, mtype)
    bit_off = spec.bit_offset
    bit_sz = btf.member_bitfield_size(acc.type_id, acc.idx)
    bitfield = bit_sz > 0
    field_sz = 0
    type_id = 0
    if bitfield:
        byte_sz = btf.size(mt)
        if byte_sz == 0:
            raise CoreError(errno.EINVAL, "bitfield of a zero-sized type")
        byte_off = bit_off // 8 // byte_sz * byte_sz
        while bit_off + bit_sz - byte_off * 8 > byte_sz * 8:
            if byte_sz >= 8:
                raise CoreError(errno.E2BIG, "bitfield can't be read with a 64-bit load")
            byte_sz *= 2
            byte_off = bit_off // 8 // byte_sz * byte_sz
    else:
        try:
            byte_sz = resolve_size(btf, mt)
        except CoreError:
            raise CoreError(errno.EINVAL, "cannot size field") from None
        byte_off = bit_off // 8
        bit_sz = byte_sz * 8
    validate = not bitfield
    if kind == FIELD_BYTE_OFFSET:
        val = byte_off
        if not bitfield:
            field_sz = byte_sz
            type_id = mt
    elif kind == FIELD_BYTE_SIZE:
        val = byte_sz
    elif kind == FIELD_SIGNED:
        mk = btf.kind(mt)
        val = int((is_any_enum(mk) and btf.kflag(mt))
                  or (mk == B.INT and bool(btf.int_encoding(mt) & B.INT_SIGNED)))
        validate = True
    elif kind == FIELD_LSHIFT_U64:
        # libbpf computes this with the host's byte order; bpftool and loaders run on the
        # target's (x86_64, arm64: little endian). C arithmetic on __u32 wraps at 32 bits.
        val = (64 - (bit_off + bit_sz - byte_off * 8)) & 0xFFFFFFFF
    elif kind == FIELD_RSHIFT_U64:
        val = (64 - bit_sz) & 0xFFFFFFFF
        validate = True
    else:
        raise CoreError(errno.EOPNOTSUPP, f"unknown relocation kind {kind}")
    return val, field_sz, type_id, validate


def _calc_type(kind: int, spec: Spec | None) -> tuple[int, bool]:
    if spec is None:
        return 0, True
    if kind == TYPE_ID_TARGET:
        return spec.root_type_id, False
    if kind in (TYPE_EXISTS, TYPE_MATCHES):
        return 1, True
    if kind == TYPE_SIZE:
        try:
            return resolve_size(spec.btf, spec.root_type_id), True
        except CoreError:
            raise CoreError(errno.EINVAL, "cannot size type") from None
    raise CoreError(errno.EOPNOTSUPP, f"unknown relocation kind {kind}")


def _calc_enumval(kind: int, spec: Spec | None) -> int:
    if kind == ENUMVAL_EXISTS:
        return 1 if spec else 0
    if kind == ENUMVAL_VALUE:
        if spec is None:
            raise _Poison()
        acc = spec.spec[0]
        return spec.btf.enum_values(acc.type_id)[acc.idx][1] & U64
    raise CoreError(errno.EOPNOTSUPP, f"unknown relocation kind {kind}")


def calc_relo(kind: int, local: Spec, targ: Spec | None) -> RelocResult:
    """bpf_core_calc_relo."""
    try:
        if kind in FIELD_KINDS:
            o_val, o_sz, o_tid, validate = _calc_field(kind, local)
            n_val, n_sz, n_tid, _ = _calc_field(kind, targ)
            fail = False
            if o_sz != n_sz and targ is not None:
                lb, tb = local.btf, targ.btf
                ok = lb.kind(o_tid) == B.PTR and tb.kind(n_tid) == B.PTR
                ok = ok or (lb.kind(o_tid) == B.INT and tb.kind(n_tid) == B.INT
                            and lb.int_encoding(o_tid) != B.INT_SIGNED
                            and tb.int_encoding(n_tid) != B.INT_SIGNED)
                fail = not ok
            return RelocResult(poison=False, orig_val=o_val, new_val=n_val, validate=validate,
                               orig_sz=o_sz, new_sz=n_sz, orig_type_id=o_tid,
                               new_type_id=n_tid, fail_memsz_adjust=fail)
        if kind in TYPE_KINDS:
            o_val, validate = _calc_type(kind, local)
            n_val, _ = _calc_type(kind, targ)
            return RelocResult(poison=False, orig_val=o_val, new_val=n_val, validate=validate)
        if kind in ENUMVAL_KINDS:
            o_val = _calc_enumval(kind, local)
            n_val = _calc_enumval(kind, targ)
            return RelocResult(poison=False, orig_val=o_val, new_val=n_val, validate=True)
    except _Poison:
        return RelocResult(poison=True, orig_val=0, new_val=0, validate=True)
    raise CoreError(errno.EOPNOTSUPP, f"unrecognized CO-RE relocation kind {kind}")


# -- one relocation against one kernel ---------------------------------------------------------


class Outcome(Record):
    """What libbpf decides for one relocation against one target BTF."""

    __slots__ = ("relo", "local", "result", "error", "matches", "candidates")
    __hash__ = None  # type: ignore[assignment]  # holds Specs, which are mutable

    def __init__(self, *, relo: CoreRelo, local: Spec | None, result: RelocResult | None,
                 error: str | None, matches: tuple[Spec, ...],
                 candidates: tuple[int, ...] = ()) -> None:
        self.relo = relo
        self.local = local  # None only when the access string does not parse
        self.result = result  # None when libbpf refuses the relocation (see error)
        self.error = error
        self.matches = matches  # every candidate spec that matched, in candidate order
        self.candidates = candidates  # the candidate list it was resolved against

    @property
    def target(self) -> Spec | None:
        """The spec libbpf (and bpftool) keep: the first matching candidate."""
        return self.matches[0] if self.matches else None

    @property
    def satisfied(self) -> bool:
        """The relocation found its target (an existence check answered 1, a read resolved)."""
        return self.error is None and bool(self.matches) and self.result is not None \
            and not self.result.poison

    def comparable(self, *, ignore_target_ids: bool = True) -> tuple[object, ...]:
        """What a loader writes into the program, for comparing two target BTFs."""
        if self.error is not None:
            return ("error", self.error.split(":")[0])
        r = self.result
        assert r is not None
        val: object = r.new_val
        if ignore_target_ids and self.relo.kind == TYPE_ID_TARGET:
            val = r.new_val != 0
        return ("ok", r.poison, val, r.new_sz, r.fail_memsz_adjust, r.validate)


def find_candidates(lb: BTF, local_id: int, tb: BTF) -> list[int]:
    """bpf_core_add_cands: targets of a compatible kind whose essential names are equal."""
    lk = lb.kind(local_id)
    lname = lb.name(local_id)
    ess = essential_name(lname)
    if not ess:
        return []
    kinds = (B.ENUM, B.ENUM64) if is_any_enum(lk) else (lk,)  # kind_core_compat's pairs
    return tb.by_essential_name(ess, kinds)


def calc_relo_insn(relo: CoreRelo, lb: BTF, cands: list[int] | None, tb: BTF,
                   trace: list[tuple[int, bool, str]] | None = None) -> Outcome:
    """bpf_core_calc_relo_insn; `cands` is narrowed in place as libbpf narrows its cache.

    `trace` receives (candidate index, matched, formatted candidate spec) per candidate, the
    lines libbpf's debug log prints, for differential tests against libbpf itself.
    """
    if relo.type_id >= len(lb):
        return Outcome(relo=relo, local=None, result=None, matches=(),
                       error=f"parse: local type {relo.type_id} does not exist")
    try:
        local = parse_spec(lb, relo)
    except CoreError as exc:
        return Outcome(relo=relo, local=None, result=None, matches=(),
                       error=f"parse: access {relo.access!r} of local type {relo.type_id}: {exc}")
    if relo.kind == TYPE_ID_LOCAL:
        return Outcome(relo=relo, local=local, matches=(), error=None,
                       result=RelocResult(poison=False, orig_val=relo.type_id,
                                          new_val=relo.type_id, validate=False))
    if not lb.name(relo.type_id):
        return Outcome(relo=relo, local=local, result=None, matches=(),
                       error="anonymous: CO-RE relocations don't support anonymous types")
    assert cands is not None
    matches: list[Spec] = []
    targ_res: RelocResult | None = None
    kept: list[int] = []
    for i, cand in enumerate(cands):
        try:
            found, cspec = spec_match(local, tb, cand)
        except CoreError as exc:
            return Outcome(relo=relo, local=local, result=None, matches=tuple(matches),
                           candidates=tuple(cands), error=f"match: candidate [{cand}]: {exc}")
        if trace is not None:
            trace.append((i, bool(found), cspec.format()))
        if not found:
            continue
        matches.append(cspec)
        try:
            res = calc_relo(relo.kind, local, cspec)
        except CoreError as exc:
            return Outcome(relo=relo, local=local, result=None, matches=tuple(matches),
                           candidates=tuple(cands), error=f"calc: {cspec.describe()}: {exc}")
        if targ_res is None:
            targ_res = res
        elif cspec.bit_offset != matches[0].bit_offset:
            return Outcome(relo=relo, local=local, result=None, matches=tuple(matches),
                           candidates=tuple(cands),
                           error=f"ambiguity: field offset {cspec.bit_offset} != "
                                 f"{matches[0].bit_offset} ({cspec.describe()} [{cand}] vs "
                                 f"[{matches[0].root_type_id}])")
        elif res.poison != targ_res.poison or res.new_val != targ_res.new_val:
            return Outcome(relo=relo, local=local, result=None, matches=tuple(matches),
                           candidates=tuple(cands),
                           error=f"ambiguity: relocation decision {res.new_val} != "
                                 f"{targ_res.new_val} ({cspec.describe()} [{cand}] vs "
                                 f"[{matches[0].root_type_id}])")
        kept.append(cand)
    considered = tuple(cands)
    if kept:
        cands[:] = kept
    if targ_res is None:
        try:
            targ_res = calc_relo(relo.kind, local, None)
        except CoreError as exc:
            return Outcome(relo=relo, local=local, result=None, matches=(),
                           error=f"calc: {local.describe()}: {exc}")
    return Outcome(relo=relo, local=local, result=targ_res, error=None, matches=tuple(matches),
                   candidates=considered)


def wanted_names(objects: Iterable[ParsedObject]) -> frozenset[str]:
    """Essential names a kernel index must collect candidates for."""
    out: frozenset[str] = frozenset()
    for obj in objects:
        out |= obj.core_names
    return out


def evaluate_object(obj: ParsedObject, tb: BTF,
                    traces: dict[tuple[str, int], list[tuple[int, bool, str]]] | None = None,
                    *, module_start: int | None = None) -> Iterator[Outcome]:
    """Every relocation of one object against one target, with libbpf's per-object cache.

    `traces`, when given, collects calc_relo_insn's per-candidate trace by (section, index).
    `module_start`: tb is vmlinux BTF with module types merged from this id on (see
    gobtfgen.btf.split), resolved as libbpf does on a running kernel (bpf_core_find_cands):
    vmlinux's candidates, and module candidates only when vmlinux has none. Without it every
    candidate is in the one spec (cilium/ebpf's KernelTypes, libbpf's btf_custom_path).
    """
    cache: dict[int, list[int]] = {}
    lb = obj.btf
    for relo in obj.relos:
        cands: list[int] | None = None
        if relo.kind != TYPE_ID_LOCAL and relo.type_id < len(lb):
            cands = cache.get(relo.type_id)
            if cands is None:
                cands = find_candidates(lb, relo.type_id, tb)
                if module_start is not None:
                    vmlinux = [c for c in cands if c < module_start]
                    cands = vmlinux or cands
                cache[relo.type_id] = cands
        trace: list[tuple[int, bool, str]] | None = None
        if traces is not None:
            trace = traces.setdefault((relo.section, relo.index), [])
        yield calc_relo_insn(relo, lb, cands, tb, trace)


def evaluate(objects: Sequence[ParsedObject], tb: BTF) -> list[list[Outcome]]:
    return [list(evaluate_object(obj, tb)) for obj in objects]
