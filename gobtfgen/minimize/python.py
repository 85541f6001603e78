"""gobtfgen's own minimizers: no bpftool, any OS, many kernels per process.

`python-compat` reproduces bpftool 7.1's `gen min_core_btf` byte for byte (src/gen.c,
btfgen_*): the same marking per relocation kind, the same output order, string table and
header, and a failure wherever bpftool fails.

`python` is the same algorithm with bpftool's defects fixed:
- every matching candidate is kept, not only the first, so a kernel with several types of one
  name resolves the same against the minimized BTF as against the full one;
- of several types that would be written identically (a kernel BTF that was never
  deduplicated holds hundreds of identical copies of `task_struct`), one is kept: every
  candidate that differs stays, identical ones answer every relocation the same;
- FWD and TYPE_TAG reached while marking are kept instead of aborting the run;
- kind_flag=0 bitfields keep their raw member offsets instead of aborting the run;
- an ambiguous or otherwise failing relocation marks what it matched, so it fails the same way
  against the minimized BTF, instead of aborting the whole kernel;
- enum-value relocations keep only the enumerators they reference (the enum keeps its name,
  kind, size and signedness); enums reached any other way stay whole;
- a type kept for a field read whose pointer target was dropped (`void *` in the output) is
  kept whole when it is also a candidate of a type relocation, so bpf_core_type_exists and
  friends answer as against the full BTF (bpftool's output can flip them);
- when libbpf's member search leaves a spec that is not a real path (a same-named member of
  another kind inside an anonymous one), the composites searched are kept whole.

The property both are tested for, on every sample kernel, on synthetic kernels and on random
ones: every relocation resolves against the output as against the full kernel BTF (target
type ids aside, which minimization renumbers), and python-compat's bytes are bpftool's.
The output is a valid BTF in bpftool's layout: marked types in id order, ids remapped,
unmarked pointer targets as void, strings interned in first-use order, 24-byte header.
"""

from __future__ import annotations

import os
import sys

from gobtfgen import btf as B
from gobtfgen.btf import BTF, BTFError, BTFWriter, TypeIndex, info_word
from gobtfgen.btf import index as btf_index
from gobtfgen.btf.ext import (
    ENUMVAL_EXISTS,
    ENUMVAL_VALUE,
    TYPE_EXISTS,
    TYPE_ID_LOCAL,
    TYPE_ID_TARGET,
    TYPE_MATCHES,
    TYPE_SIZE,
    ObjectCache,
    ObjectError,
    ParsedObject,
)
from gobtfgen.minimize import BUILTIN_VERSION, MinimizeError, Minimizer
from gobtfgen.relocs import (
    FIELD_KINDS,
    Outcome,
    Spec,
    evaluate_object,
    find_candidates,
    skip_mods_and_typedefs,
    wanted_names,
)

# `gobtfgen minimize` imports this module in every process, cold: typing, pathlib,
# collections.abc and contextlib cost it 5-10 ms. typing.TYPE_CHECKING without importing
# typing (mypy reads this name).
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Sequence
    from os import PathLike
    from pathlib import Path
    from typing import ClassVar


class _Marks:
    """Which kernel types, members and enumerators the minimized BTF keeps."""

    def __init__(self, kernel: BTF, *, compat: bool) -> None:
        self.k = kernel
        self.compat = compat
        self.types: set[int] = set()
        self.members: dict[int, set[int]] = {}
        self.whole_enums: set[int] = set()
        self.enumerators: dict[int, set[int]] = {}
        self._seen: set[tuple[int, bool]] = set()
        self._seen_match: set[tuple[int, bool]] = set()
        self._whole: set[int] = set()
        self.pinned: set[int] = set()  # never merged with an identical type (_representatives)
        # Merged module types start here (gobtfgen.btf.split); the output keeps them last.
        self.module_start: int | None = None
        # Pointers whose target some relocation compares (type relocations follow pointers,
        # type_matches looks behind them); field relocations never do (libbpf's
        # bpf_core_fields_are_compat: any pointer matches any pointer).
        self.deep_ptrs: set[int] = set()

    def _unsupported(self, tid: int) -> MinimizeError:
        # bpftool: `unsupported kind: %s (%d)` from btfgen_mark_type*; the run stops.
        kind = B.KIND_NAMES.get(self.k.kind(tid), str(self.k.kind(tid)))
        return MinimizeError(f"unsupported kind: {kind} ({tid}) reached while marking types "
                             "(bpftool gen min_core_btf aborts here; --minimizer python keeps it)")

    def mark_type(self, tid: int, follow_ptrs: bool) -> None:
        """btfgen_mark_type."""
        k = self.k
        while tid:
            key = (tid, follow_ptrs)
            if key in self._seen:
                return
            self._seen.add(key)
            self.types.add(tid)
            kind = k.kind(tid)
            if kind in (B.INT, B.FLOAT, B.STRUCT, B.UNION):
                return
            if kind in (B.ENUM, B.ENUM64):
                self.whole_enums.add(tid)
                return
            if kind == B.PTR:
                if not follow_ptrs:
                    return
                self.deep_ptrs.add(tid)
                tid = k.ref(tid)
            elif kind in (B.CONST, B.RESTRICT, B.VOLATILE, B.TYPEDEF):
                tid = k.ref(tid)
            elif kind == B.ARRAY:
                elem, index, _ = k.array(tid)
                self.mark_type(elem, follow_ptrs)
                tid = index
            elif kind == B.FUNC_PROTO:
                self.mark_type(k.ref(tid), follow_ptrs)
                for _, ptype in k.params(tid):
                    self.mark_type(ptype, follow_ptrs)
                return
            elif self.compat:
                raise self._unsupported(tid)
            elif kind == B.FWD:
                return  # the fix: a forward declaration is a complete answer for CO-RE
            elif kind in (B.TYPE_TAG, B.FUNC, B.VAR, B.DECL_TAG):
                tid = k.ref(tid)
            else:
                return

    def mark_member(self, tid: int, idx: int) -> None:
        self.members.setdefault(tid, set()).add(idx)

    def record_field(self, spec: Spec) -> None:
        """btfgen_record_field_relo: the root, then each member on the raw access path."""
        if spec.quirk and not self.compat:
            self._record_field_whole(spec)
            return
        k = self.k
        tid = spec.root_type_id
        self.mark_type(tid, False)
        for idx in spec.raw_spec[1:]:
            tid = skip_mods_and_typedefs(k, tid)
            kind = k.kind(tid)
            if kind in (B.STRUCT, B.UNION):
                self.mark_member(tid, idx)
                tid = k.member(tid, idx)[1]
                self.mark_type(tid, False)
            elif kind == B.ARRAY:
                tid = k.array(tid)[0]
            else:
                raise MinimizeError(f"unsupported kind: {B.KIND_NAMES.get(kind)} ({tid}) on a "
                                    "field access path")

    def _record_field_whole(self, spec: Spec) -> None:
        """Keep every member of the composites the match looked into.

        When libbpf's speculative push/pop goes astray (a same-named but incompatible member
        inside an anonymous one), raw_spec is no longer a path and the computed offset depends
        on members off the path; keeping all members of each composite on the accessor path,
        anonymous ones included, reproduces the search exactly.
        """
        k = self.k
        self.mark_type(spec.root_type_id, False)
        cur = spec.root_type_id
        for acc in spec.spec[1:]:
            if acc.name:
                # The search for this name started in `cur` and may have gone through any of
                # its anonymous members; acc.type_id is where it ended.
                self._mark_all_members(cur)
                cur = k.member(acc.type_id, acc.idx)[1]
            else:
                arr = skip_mods_and_typedefs(k, cur)
                if k.kind(arr) != B.ARRAY:
                    return
                cur = k.array(arr)[0]
                self.mark_type(cur, False)

    def _mark_all_members(self, tid: int) -> None:
        k = self.k
        tid = skip_mods_and_typedefs(k, tid)
        if k.kind(tid) not in (B.STRUCT, B.UNION) or tid in self._whole:
            return
        self._whole.add(tid)
        self.mark_type(tid, False)
        for i, (name_off, mtype, _) in enumerate(k.members(tid)):
            self.mark_member(tid, i)
            self.mark_type(mtype, False)
            if not name_off:
                self._mark_all_members(mtype)

    def mark_type_match(self, tid: int, behind_ptr: bool) -> None:
        """btfgen_mark_type_match: every member, recursively, stopping behind pointers."""
        k = self.k
        while tid:
            key = (tid, behind_ptr)
            if key in self._seen_match:
                return
            self._seen_match.add(key)
            self.types.add(tid)
            kind = k.kind(tid)
            if kind in (B.INT, B.FLOAT):
                return
            if kind in (B.ENUM, B.ENUM64):
                self.whole_enums.add(tid)
                return
            if kind in (B.STRUCT, B.UNION):
                if behind_ptr:
                    return
                for i, (_, mtype, _) in enumerate(k.members(tid)):
                    self.mark_member(tid, i)
                    self.mark_type_match(mtype, False)
                return
            if kind in (B.CONST, B.FWD, B.RESTRICT, B.TYPEDEF, B.VOLATILE):
                tid = k.ref(tid)  # a FWD's size_or_type is 0: this ends the walk
            elif kind == B.PTR:
                self.deep_ptrs.add(tid)
                tid = k.ref(tid)
                behind_ptr = True
            elif kind == B.ARRAY:
                elem, index, _ = k.array(tid)
                self.mark_type_match(elem, False)
                tid = index
                behind_ptr = False
            elif kind == B.FUNC_PROTO:
                self.mark_type_match(k.ref(tid), False)
                for _, ptype in k.params(tid):
                    self.mark_type_match(ptype, False)
                return
            elif self.compat:
                raise self._unsupported(tid)
            elif kind == B.TYPE_TAG:
                tid = k.ref(tid)
            else:
                return

    def record_enumval(self, spec: Spec) -> None:
        if self.compat:
            self.mark_type(spec.root_type_id, False)  # the whole enum, as bpftool does
            return
        # The root may be a typedef of the enum: keep the chain, then one enumerator.
        k = self.k
        tid = spec.root_type_id
        end = skip_mods_and_typedefs(k, tid)  # also proves the chain ends
        while tid != end:
            self.types.add(tid)
            tid = k.ref(tid)
        self.types.add(tid)
        acc = spec.spec[0]
        self.enumerators.setdefault(acc.type_id, set()).add(acc.idx)

    def record(self, kind: int, spec: Spec) -> None:
        """btfgen_record_reloc."""
        if kind in FIELD_KINDS:
            self.record_field(spec)
        elif kind == TYPE_ID_LOCAL:
            return
        elif kind in (TYPE_ID_TARGET, TYPE_EXISTS, TYPE_SIZE):
            self.mark_type(spec.root_type_id, True)
        elif kind == TYPE_MATCHES:
            self.mark_type_match(spec.root_type_id, False)
        elif kind in (ENUMVAL_EXISTS, ENUMVAL_VALUE):
            self.record_enumval(spec)
        else:
            raise MinimizeError(f"unknown CO-RE relocation kind {kind}")

    # -- output ---------------------------------------------------------------------------

    def write(self) -> bytes:
        """btfgen_get_btf: marked types in id order, ids remapped, unmarked refs to void.

        The python minimizer then keeps one representative of each set of identical types
        (see _representatives); python-compat writes every marked type, as bpftool does.
        """
        order = sorted(self.types)
        rep = {tid: tid for tid in order} if self.compat else self._representatives(order)
        kept = [tid for tid in order if rep[tid] == tid]
        if not self.compat:
            kept = self._canonical_order(kept, rep)
        position = {tid: i + 1 for i, tid in enumerate(kept)}
        new_id = {tid: position[rep[tid]] for tid in order}
        w = BTFWriter()
        for tid in kept:
            w.add_record(self._render(w, tid, new_id))
        return w.to_bytes()

    def _canonical_order(self, kept: list[int], rep: dict[int, int]) -> list[int]:
        """The kept types in an order that depends on the types, not on where the kernel's
        build put them: named types by kind and essential name (libbpf's, without a
        `___flavor`), each followed depth-first by the anonymous types it refers to (a
        pointer, an array, a function prototype) that no earlier type took.

        Kernels of different builds list the same types in different orders, so in bpftool's
        id order the payload (docs/payload-format.md, "Node lists") spends most of a
        cross-family kernel's list on saying where each type went; in this order two kernels'
        lists differ only where their types do. Type order is free in BTF (references may
        point forward), and the one order libbpf's results depend on is kept: among the
        candidates of one relocation (same essential name, compatible kind) the first that
        matches gives the load size, so types of one essential name and kind keep their id
        order. Type-id relocations get ids of the minimized BTF in either order. Merged
        module types stay after the vmlinux ones (module_start).
        """
        scratch = BTFWriter()
        refs: dict[int, list[int]] = {}
        for tid in kept:
            # Rendered with every reference as the kernel id of its representative, so the
            # references are the ones the written record will have.
            rec = self._render(scratch, tid, rep)
            info = rec[1]
            refs[tid] = [rec[p] for p in _ref_positions(info >> 24 & 0x1F, info & 0xFFFF)
                         if rec[p]]
        k = self.k
        placed: set[int] = set()
        out: list[int] = []

        def visit(root: int) -> None:
            stack = [root]
            while stack:
                tid = stack.pop()
                if tid in placed:
                    continue
                placed.add(tid)
                out.append(tid)
                stack.extend(r for r in reversed(refs[tid])
                             if r not in placed and not k.name_off(r))

        start = self.module_start
        parts = [kept] if start is None else [[t for t in kept if t < start],
                                              [t for t in kept if t >= start]]
        for part in parts:
            for tid in sorted((t for t in part if k.name_off(t)),
                              key=lambda t: (_CANDIDATE_KIND.get(k.kind(t), k.kind(t)),
                                             B.essential_name(k.name(t)), t)):
                visit(tid)
            for tid in part:
                visit(tid)
        return out

    def _render(self, w: BTFWriter, tid: int, new_id: dict[int, int]) -> list[int]:
        kind = self.k.kind(tid)
        if kind in (B.STRUCT, B.UNION):
            return self._composite(w, tid, kind, new_id)
        if kind in (B.ENUM, B.ENUM64) and tid not in self.whole_enums \
                and tid in self.enumerators:
            return self._partial_enum(w, tid, kind)
        return self._copy(w, tid, kind, new_id)

    def _representatives(self, order: list[int]) -> dict[int, int]:
        """Map every marked type to the first of the marked types identical to it.

        A kernel BTF that was never deduplicated (btfhub's CentOS 8 arm64 kernels: 562k types,
        `task_struct` 476 times) makes every copy a matching candidate. Two types that would be
        written the same (name, kind, size, kept members and enumerators, and referenced types
        that are again identical, cycles included) give every relocation the same answer, so
        one of them answers for all: libbpf's ambiguity check compares results, which are
        equal, and its candidate narrowing keeps or drops them together. The comparison is
        the coarsest partition stable under "refers to the same classes" (partition
        refinement), so `struct list_head { struct list_head *next; }` copies merge too.
        Candidates of target-type-id relocations stay apart: their result is the id itself,
        and merging would turn libbpf's ambiguity against the full BTF into a success.
        Pointers only field reads reach compare without their targets (see deep_ptrs).
        """
        scratch = BTFWriter()  # one string table, so equal strings give equal offsets
        identity = {tid: tid for tid in order}
        local: dict[int, tuple[int, ...]] = {}
        refs: dict[int, tuple[int, ...]] = {}
        for tid in order:
            rec = self._render(scratch, tid, identity)
            kind = self.k.kind(tid)
            at = _ref_positions(kind, rec[1] & 0xFFFF)
            refs[tid] = tuple(rec[i] for i in at)
            for i in at:
                rec[i] = 0
            if tid in self.pinned:
                rec.append(tid)  # a class of its own
            if kind == B.PTR and tid not in self.deep_ptrs:
                # Only field reads reach it: where it points changes no result, so a copy
                # pointing at a forward declaration (void * here) and one pointing at the
                # struct are the same pointer. Pointers compare by what their target is
                # called, so the output still says `struct mm_struct *mm`; the
                # representative's target is written.
                refs[tid] = ()
                rec += (_SHALLOW, *self._pointee_key(scratch, self.k.ref(tid)))
            local[tid] = tuple(rec)
        classes: dict[tuple[int, ...], int] = {}
        cls = {tid: classes.setdefault(local[tid], len(classes)) for tid in order}
        count = len(classes)
        while True:
            refined: dict[tuple[int, ...], int] = {}
            nxt = {tid: refined.setdefault(
                (cls[tid], *(cls[r] if r else -1 for r in refs[tid])), len(refined))
                for tid in order}
            if len(refined) == count:
                break
            cls, count = nxt, len(refined)
        first: dict[int, int] = {}
        return {tid: first.setdefault(cls[tid], tid) for tid in order}

    def _pointee_key(self, w: BTFWriter, tid: int) -> list[int]:
        """Kinds and names down a pointer's target chain to the first named type (a forward
        declaration counts as its struct or union), names as offsets into w's strings."""
        k = self.k
        key: list[int] = []
        for _ in range(8):
            kind = k.kind(tid)
            if kind == B.FWD:
                kind = B.UNION if k.kflag(tid) else B.STRUCT
            key += (kind, w.add_str(k.name(tid)))
            if tid == 0 or k.name_off(tid) or kind not in (B.PTR, B.CONST, B.VOLATILE,
                                                           B.RESTRICT, B.TYPE_TAG):
                break
            tid = k.ref(tid)
        return key

    def _composite(self, w: BTFWriter, tid: int, kind: int, new_id: dict[int, int]) -> list[int]:
        k = self.k
        name_off = w.add_str(k.name(tid))
        kept = sorted(self.members.get(tid, ()))
        src_kflag = k.kflag(tid)
        body: list[int] = []
        kflag = False
        for idx in kept:
            m_name, m_type, raw = k.member(tid, idx)
            if self.compat:
                # libbpf's btf__add_field: a member at a non-byte offset must carry a bitfield
                # size, which kind_flag=0 structs do not record; bpftool fails the run here.
                bit_off = raw & 0xFFFFFF if src_kflag else raw
                bit_sz = raw >> 24 if src_kflag else 0
                is_bitfield = bit_sz != 0 or bit_off % 8 != 0
                if is_bitfield and (bit_sz == 0 or bit_off > 0xFFFFFF):
                    raise MinimizeError(
                        f"{k.name(tid) or '(anon)'} [{tid}] member {idx}: kind_flag=0 bitfield "
                        "at a non-byte offset (bpftool's btf__add_field rejects it; "
                        "--minimizer python keeps it)")
                if kind == B.UNION and bit_off:
                    raise MinimizeError(f"union [{tid}] member {idx} at a non-zero offset")
                kflag = kflag or is_bitfield
                raw = bit_off | (bit_sz << 24)
            else:
                # Keep raw offsets; kind_flag=1 only matters when a kept member is a bitfield.
                kflag = kflag or (src_kflag and raw >> 24 != 0)
            body += (w.add_str(k.str_at(m_name)), new_id.get(m_type, 0), raw)
        return [name_off, info_word(kind, len(kept), kflag), k.size(tid), *body]

    def _partial_enum(self, w: BTFWriter, tid: int, kind: int) -> list[int]:
        k = self.k
        name_off = w.add_str(k.name(tid))
        rec = k.record(tid)
        per = 2 if kind == B.ENUM else 3
        body: list[int] = []
        kept = sorted(self.enumerators[tid])
        for idx in kept:
            entry = rec[3 + per * idx: 3 + per * (idx + 1)]
            entry[0] = w.add_str(k.str_at(entry[0]))
            body += entry
        return [name_off, info_word(kind, len(kept), k.kflag(tid)), k.size(tid), *body]

    def _copy(self, w: BTFWriter, tid: int, kind: int, new_id: dict[int, int]) -> list[int]:
        """btf__add_type: strings in btf_type_visit_str_offs order, then ids remapped."""
        k = self.k
        rec = k.record(tid)
        rec[0] = w.add_str(k.str_at(rec[0]))
        vlen = rec[1] & 0xFFFF
        if kind in (B.ENUM, B.FUNC_PROTO):
            for i in range(vlen):
                rec[3 + 2 * i] = w.add_str(k.str_at(rec[3 + 2 * i]))
        elif kind == B.ENUM64:
            for i in range(vlen):
                rec[3 + 3 * i] = w.add_str(k.str_at(rec[3 + 3 * i]))
        if kind in (B.PTR, B.TYPEDEF, B.VOLATILE, B.CONST, B.RESTRICT, B.FUNC, B.VAR,
                    B.DECL_TAG, B.TYPE_TAG):
            rec[2] = new_id.get(rec[2], 0)
        elif kind == B.FUNC_PROTO:
            rec[2] = new_id.get(rec[2], 0)
            for i in range(vlen):
                rec[4 + 2 * i] = new_id.get(rec[4 + 2 * i], 0)
        elif kind == B.ARRAY:
            rec[3] = new_id.get(rec[3], 0)
            rec[4] = new_id.get(rec[4], 0)
        elif kind == B.DATASEC:
            for i in range(vlen):
                rec[3 + 3 * i] = new_id.get(rec[3 + 3 * i], 0)
        return rec


_SHALLOW = 1 << 32  # not a u32: marks a key apart from every written record


# Kinds whose types are candidates of one relocation together (libbpf's kind_core_compat):
# an enum's candidates are the enums and enum64s of its essential name.
_CANDIDATE_KIND = {B.ENUM64: B.ENUM}


def _ref_positions(kind: int, vlen: int) -> list[int]:
    """Where a written record holds type ids (libbpf's btf_type_visit_type_ids)."""
    if kind in (B.PTR, B.TYPEDEF, B.VOLATILE, B.CONST, B.RESTRICT, B.FUNC, B.VAR,
                B.DECL_TAG, B.TYPE_TAG):
        return [2]
    if kind == B.FUNC_PROTO:
        return [2, *(4 + 2 * i for i in range(vlen))]
    if kind == B.ARRAY:
        return [3, 4]
    if kind in (B.STRUCT, B.UNION):
        return [4 + 3 * i for i in range(vlen)]
    if kind == B.DATASEC:
        return [3 + 3 * i for i in range(vlen)]
    return []


def _relo_where(obj: ParsedObject, out: Outcome) -> str:
    r = out.relo
    return (f"{obj.name}: {r.section} relo #{r.index} "
            f"({obj.btf.name(r.type_id) if 0 < r.type_id < len(obj.btf) else r.type_id} "
            f"{r.access})")


def open_kernel(data: bytes | memoryview, objects: Sequence[ParsedObject], *,
                index: TypeIndex | None = None) -> BTF:
    """Index a kernel BTF for these objects' candidate names."""
    return BTF(data, wanted=wanted_names(objects), index=index)  # adds `long` and its aliases


def mark(kernel: BTF, objects: Sequence[ParsedObject], *, compat: bool,
         module_start: int | None = None) -> tuple[_Marks, list[list[Outcome]]]:
    """Mark what every relocation needs; also return the outcomes against the full BTF.

    module_start: the kernel is vmlinux BTF with module types merged from this id on (known
    when gobtfgen merged it); then what libbpf's order on a running kernel matches (vmlinux
    candidates first, modules only when vmlinux has none) is marked too, so the output answers
    both ways as the full BTF does.
    """
    marks = _Marks(kernel, compat=compat)
    marks.module_start = module_start
    outcomes: list[list[Outcome]] = []
    if module_start is not None and not compat:
        for obj in objects:
            for out in evaluate_object(obj, kernel, module_start=module_start):
                if out.local is not None:
                    for spec in out.matches:
                        marks.record(out.relo.kind, spec)
    for obj in objects:
        outs = list(evaluate_object(obj, kernel))
        outcomes.append(outs)
        for out in outs:
            if out.relo.kind == TYPE_ID_TARGET:
                marks.pinned.update(out.candidates)
            if out.error is not None:
                if compat:
                    raise MinimizeError(f"{_relo_where(obj, out)}: {out.error}")
                # libbpf fails this relocation against the full BTF: keep what it matched so
                # it fails the same way against the minimized one.
                if out.local is None:
                    continue
                for spec in out.matches:
                    marks.record(out.relo.kind, spec)
                continue
            if compat:
                # bpftool records only the first matching candidate (specs_scratch[2]).
                if out.target is not None:
                    marks.record(out.relo.kind, out.target)
            else:
                for spec in out.matches:
                    marks.record(out.relo.kind, spec)
    if not compat:
        _deepen_type_candidates(marks, outcomes)
    return marks, outcomes


_TYPE_COMPARED = frozenset({TYPE_ID_TARGET, TYPE_EXISTS, TYPE_SIZE, TYPE_MATCHES})


def _deepen_type_candidates(marks: _Marks, outcomes: list[list[Outcome]]) -> None:
    """Keep the full shape of every type-relocation candidate that ends up in the output.

    Field and enum-value relocations compare names, kinds and sizes, which kept types keep.
    Type relocations compare whole type graphs (pointer targets, function prototypes, for
    type_matches also members): a candidate that did not match against the full BTF, but is
    in the output because something else needed it, could match once its pointer targets have
    become `void *`. Marking such candidates as a matching one would be marked makes them
    compare the same as in the full BTF. Repeats until no new type joins the output.
    """
    relos = [out for outs in outcomes for out in outs
             if out.relo.kind in _TYPE_COMPARED and out.candidates]
    done: set[tuple[int, int]] = set()
    while True:
        added = False
        for out in relos:
            matched = {spec.root_type_id for spec in out.matches}
            for cand in out.candidates:
                if cand in matched or cand not in marks.types or (cand, out.relo.kind) in done:
                    continue
                done.add((cand, out.relo.kind))
                before = len(marks.types)
                if out.relo.kind == TYPE_MATCHES:
                    marks.mark_type_match(cand, False)
                else:
                    marks.mark_type(cand, True)
                added = added or len(marks.types) != before
        if not added:
            return


_VERIFY_ROUNDS = 3


def _verified(kernel: BTF, objects: Sequence[ParsedObject], marks: _Marks,
              full: list[list[Outcome]]) -> bytes:
    """Write, then re-resolve every relocation against the output; deepen until they agree.

    Minimization only loses information, and the marking rules keep what libbpf looks at
    (see _deepen_type_candidates for the one subtle case), so this is a safety net: the tests
    run it on every sample kernel, and `PythonMinimizer(verify=True)` (GOBTFGEN_VERIFY=1)
    runs it in production at about 15% of the time per kernel. A disagreeing relocation gets
    every candidate it can see marked in depth, and a BTF that still disagrees is an error,
    not an output.
    """
    names = wanted_names(objects)
    for _ in range(_VERIFY_ROUNDS):
        out = marks.write()
        small = BTF(out, wanted=names)
        bad: list[tuple[ParsedObject, Outcome]] = []
        for obj, outs in zip(objects, full, strict=True):
            for want, got in zip(outs, evaluate_object(obj, small), strict=True):
                if want.comparable() != got.comparable():
                    bad.append((obj, want))
        if not bad:
            return out
        for obj, want in bad:
            for cand in find_candidates(obj.btf, want.relo.type_id, kernel):
                marks.mark_type(cand, True)
                marks.mark_type_match(cand, False)
    where = _relo_where(bad[0][0], bad[0][1])
    raise MinimizeError(f"{where}: the minimized BTF resolves differently from the full one "
                        "(a gobtfgen bug: please report it; --minimizer bpftool works around it)")


def minimize_btf(kernel_data: bytes | memoryview, objects: Sequence[ParsedObject], *,
                 compat: bool, verify: bool = False,
                 index_file: str | PathLike[str] | None = None) -> bytes:
    """The minimized BTF of one kernel blob for parsed objects.

    verify (python minimizer only): re-resolve every relocation against the output and
    compare with the full BTF (see _verified). index_file: where the kernel's type index is
    kept between runs (read when valid, written when it was not).
    """
    for obj in objects:
        if not obj.has_btf_ext:
            raise MinimizeError(f"failed to parse BPF object '{obj.path}': section .BTF.ext "
                                "not found")
        if compat and obj.little_endian != (sys.byteorder == "little"):
            # libbpf 1.1's btf_ext__new rejects .BTF.ext in non-native byte order, so bpftool
            # fails on every kernel; the python minimizer reads either order.
            raise MinimizeError(f"failed to parse BPF object '{obj.path}': .BTF.ext in "
                                "non-native byte order (bpftool cannot read it; use "
                                "--minimizer python)")
    try:
        kernel = open_kernel(kernel_data, objects, index=btf_index.load(index_file, kernel_data))
        btf_index.store(index_file, kernel)
        h = kernel.header
        if compat and h.little_endian != (sys.byteorder == "little") and h.hdr_len != 24:
            # libbpf's btf_parse_hdr: non-native BTF must have the 24-byte header (ENOTSUP).
            raise MinimizeError(f"kernel BTF: non-native byte order with a {h.hdr_len}-byte "
                                "header (bpftool cannot read it; use --minimizer python)")
        marks, full = mark(kernel, objects, compat=compat)
        if compat or not verify:
            return marks.write()
        return _verified(kernel, objects, marks, full)
    except BTFError as exc:
        raise MinimizeError(f"kernel BTF: {exc}") from None
    except IndexError:
        raise MinimizeError("kernel BTF: a type refers to a type id past the end") from None


def minimize_merged(kernel_data: bytes, objects: Sequence[ParsedObject], module_start: int
                    ) -> tuple[bytes, int]:
    """The minimized BTF of a vmlinux BTF with module types merged from id module_start on
    (gobtfgen.btf.split), and where the module types start in it: marked types keep their id
    order, so the vmlinux ones come first."""
    kernel = open_kernel(kernel_data, objects)
    marks, _ = mark(kernel, objects, compat=False, module_start=module_start)
    out = marks.write()
    order = sorted(marks.types)
    rep = marks._representatives(order)
    kept_below = sum(1 for tid in order if rep[tid] == tid and tid < module_start)
    return out, kept_below + 1


class _PythonMinimizer(Minimizer):
    compat: ClassVar[bool]
    # Pure Python holds the GIL: parallelism comes from worker processes, each of which parses
    # the objects once and then serves many kernels.
    parallel: ClassVar[str] = "processes"
    reads_file: ClassVar[bool] = False  # takes the kernel's bytes

    def __init__(self, *, verify: bool | None = None) -> None:
        self._objects = ObjectCache()
        if verify is None:
            verify = os.environ.get("GOBTFGEN_VERIFY", "") not in ("", "0")
        self.verify = verify

    def identity(self) -> str:
        return f"{self.name} {BUILTIN_VERSION}"

    def prepare(self, objects: Sequence[Path]) -> None:
        # Parsed once in the parent: pyelftools' import and the parse are then every worker's.
        try:  # noqa: SIM105 (see the imports)
            self.parse_objects(objects)
        except MinimizeError:
            pass

    def parse_objects(self, objects: Sequence[str | PathLike[str]]) -> list[ParsedObject]:
        try:
            return self._objects.get_all(objects)
        except (ObjectError, OSError) as exc:
            raise MinimizeError(str(exc)) from None

    def minimize(self, kernel_btf: str | PathLike[str], objects: Sequence[str | PathLike[str]],
                 *, data: bytes | None = None,
                 index: str | PathLike[str] | None = None) -> bytes:
        parsed = self.parse_objects(objects)
        if data is None:
            try:
                with open(kernel_btf, "rb") as f:
                    data = f.read()
            except OSError as exc:
                raise MinimizeError(f"cannot read {kernel_btf}: {exc.strerror}") from None
        return minimize_btf(data, parsed, compat=self.compat, verify=self.verify,
                            index_file=index)


class PythonCompatMinimizer(_PythonMinimizer):
    """Byte-identical to bpftool 7.1 gen min_core_btf, failures included."""

    name: ClassVar[str] = "python-compat"
    compat = True


class PythonMinimizer(_PythonMinimizer):
    """bpftool's algorithm with its defects fixed (see the module docstring)."""

    name: ClassVar[str] = "python"
    compat = False

