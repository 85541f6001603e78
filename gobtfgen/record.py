"""Record: what frozen dataclasses give, for the modules every `gobtfgen minimize` imports.

A one-kernel command pays each import in every process, and importing dataclasses costs it
5-10 ms (inspect, ast, dis, tokenize), a third of what bpftool's whole process takes; each
@dataclass costs a few hundred microseconds more to create. The records of the BTF reader, the
.BTF.ext reader and libbpf's CO-RE rules (gobtfgen.btf, gobtfgen.btf.ext, gobtfgen.relocs)
subclass this instead: fields in __slots__ (set once in a plain __init__ and treated as
immutable, as the frozen dataclasses they were), equality, hashing and repr over those fields.
Everything else in gobtfgen keeps dataclasses.
"""

from __future__ import annotations


class Record:
    __slots__: tuple[str, ...] = ()

    def _fields(self) -> tuple[object, ...]:
        return tuple(getattr(self, name) for name in self.__slots__)

    def __repr__(self) -> str:
        body = ", ".join(f"{name}={getattr(self, name)!r}" for name in self.__slots__)
        return f"{type(self).__name__}({body})"

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return self._fields() == other._fields()

    def __hash__(self) -> int:
        return hash(self._fields())
