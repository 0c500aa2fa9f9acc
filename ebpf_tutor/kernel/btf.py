"""A small reader for BTF, the kernel's own description of its types.

`/sys/kernel/btf/vmlinux` lists every struct the running kernel was built with,
with exact member offsets. We use it as the ground truth to check header trees
against (see `headers.py`), and Chapter 10 uses it to inspect structures.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

VMLINUX = Path("/sys/kernel/btf/vmlinux")

# BTF kinds (include/uapi/linux/btf.h)
KINDS = {
    0: "unknown", 1: "int", 2: "ptr", 3: "array", 4: "struct", 5: "union",
    6: "enum", 7: "fwd", 8: "typedef", 9: "volatile", 10: "const",
    11: "restrict", 12: "func", 13: "func_proto", 14: "var", 15: "datasec",
    16: "float", 17: "decl_tag", 18: "type_tag", 19: "enum64",
}
_MODIFIERS = {"typedef", "volatile", "const", "restrict", "type_tag"}


@dataclass
class Member:
    name: str
    type_id: int
    bit_offset: int
    bitfield_size: int = 0


@dataclass
class BtfType:
    id: int
    kind: str
    name: str
    size_or_type: int
    vlen: int
    members: list[Member] = field(default_factory=list)
    array: tuple[int, int] | None = None  # (element type id, number of elements)


class Btf:
    """Parsed BTF blob: look up types by name and resolve member offsets."""

    def __init__(self, blob: bytes):
        magic, _ver, _flags, hdr_len, type_off, type_len, str_off, _str_len = struct.unpack_from(
            "<HBBIIIII", blob, 0)
        if magic != 0xEB9F:
            raise ValueError("not a BTF blob (bad magic)")
        self._strings = blob[hdr_len + str_off:]
        self.types: list[BtfType | None] = [None]  # type id 0 is void
        self._parse(blob[hdr_len + type_off: hdr_len + type_off + type_len])
        self._by_name: dict[tuple[str, str], int] = {}
        for t in self.types[1:]:
            if t and t.name:
                self._by_name.setdefault((t.kind, t.name), t.id)

    def _str(self, off: int) -> str:
        end = self._strings.index(b"\0", off)
        return self._strings[off:end].decode()

    def _parse(self, data: bytes) -> None:
        pos, tid = 0, 1
        while pos < len(data):
            name_off, info, size_or_type = struct.unpack_from("<III", data, pos)
            pos += 12
            kind = KINDS.get((info >> 24) & 0x1F, "unknown")
            vlen, kflag = info & 0xFFFF, (info >> 31) & 1
            t = BtfType(tid, kind, self._str(name_off), size_or_type, vlen)
            if kind == "int":
                pos += 4
            elif kind == "array":
                elem, _index, nelems = struct.unpack_from("<III", data, pos)
                t.array = (elem, nelems)
                pos += 12
            elif kind in ("struct", "union"):
                for _ in range(vlen):
                    m_name, m_type, m_off = struct.unpack_from("<III", data, pos)
                    pos += 12
                    bits, size = (m_off & 0xFFFFFF, m_off >> 24) if kflag else (m_off, 0)
                    t.members.append(Member(self._str(m_name), m_type, bits, size))
            elif kind == "enum":
                pos += 8 * vlen
            elif kind == "enum64":
                pos += 12 * vlen
            elif kind == "func_proto":
                pos += 8 * vlen
            elif kind == "var":
                pos += 4
            elif kind == "datasec":
                pos += 12 * vlen
            elif kind == "decl_tag":
                pos += 4
            self.types.append(t)
            tid += 1

    def find(self, name: str, kind: str = "struct") -> BtfType:
        """The named struct (or union, enum...). Raises KeyError when absent."""
        try:
            return self.types[self._by_name[(kind, name)]]  # type: ignore[return-value]
        except KeyError:
            raise KeyError(f"{kind} {name} is not in this kernel's BTF") from None

    def resolve(self, type_id: int) -> BtfType | None:
        """Follow typedefs and qualifiers down to the underlying type."""
        t = self.types[type_id]
        while t is not None and t.kind in _MODIFIERS:
            t = self.types[t.size_or_type]
        return t

    def member_offset(self, struct_name: str, member: str) -> int:
        """Byte offset of `member` in `struct struct_name`, looking through
        anonymous structs and unions as C's offsetof() does. Nested paths
        like "f_path.dentry" are allowed."""
        t = self.find(struct_name)
        total = 0
        for part in member.split("."):
            hit = self._find_member(t, part)
            if hit is None:
                raise KeyError(f"struct {struct_name} has no member {member}")
            bits, t = hit
            total += bits
        return total // 8

    def _find_member(self, t: BtfType | None, name: str) -> tuple[int, BtfType | None] | None:
        if t is None:
            return None
        for m in t.members:
            if m.name == name:
                return m.bit_offset, self.resolve(m.type_id)
            if not m.name:  # anonymous struct/union: search inside
                inner = self.resolve(m.type_id)
                found = self._find_member(inner, name)
                if found is not None:
                    return m.bit_offset + found[0], found[1]
        return None

    def named_records(self) -> dict[str, list[BtfType]]:
        """Every named struct and union, keyed "struct NAME" / "union NAME"
        (a name can stand for more than one layout in vmlinux BTF), and
        anonymous ones reached through a typedef, keyed by the typedef's name."""
        out: dict[str, list[BtfType]] = {}
        for t in self.types[1:]:
            if t is None:
                continue
            if t.kind in ("struct", "union") and t.name:
                out.setdefault(f"{t.kind} {t.name}", []).append(t)
            elif t.kind == "typedef" and t.name:
                target = self.types[t.size_or_type]
                if target is not None and target.kind in ("struct", "union") and not target.name:
                    out.setdefault(t.name, []).append(target)
        return out

    def flat_members(self, t: BtfType) -> dict[str, int]:
        """Named, byte-aligned, non-bitfield members of `t` with their byte
        offsets, looking through anonymous structs and unions as C does."""
        out: dict[str, int] = {}
        for m in t.members:
            if m.name:
                if m.bitfield_size == 0 and m.bit_offset % 8 == 0:
                    out.setdefault(m.name, m.bit_offset // 8)
                continue
            inner = self.resolve(m.type_id)
            if inner is not None and inner.kind in ("struct", "union") and m.bit_offset % 8 == 0:
                for name, off in self.flat_members(inner).items():
                    out.setdefault(name, m.bit_offset // 8 + off)
        return out

    def struct_size(self, struct_name: str) -> int:
        return self.find(struct_name).size_or_type

    def layout(self, struct_name: str) -> list[tuple[str, int, int]]:
        """(member name, byte offset, size in bytes or 0 if unknown) rows, in order."""
        rows = []
        for m in self.find(struct_name).members:
            rt = self.resolve(m.type_id)
            size = self._sizeof(rt)
            rows.append((m.name or "<anon>", m.bit_offset // 8, size))
        return rows

    def _sizeof(self, t: BtfType | None) -> int:
        if t is None:
            return 0
        if t.kind in ("int", "struct", "union", "enum", "enum64", "float"):
            return t.size_or_type
        if t.kind == "ptr":
            return 8
        if t.kind == "array" and t.array:
            return t.array[1] * self._sizeof(self.resolve(t.array[0]))
        return 0


@lru_cache(maxsize=1)
def kernel_btf(path: str = str(VMLINUX)) -> Btf:
    """The running kernel's BTF (parsed once, about a second)."""
    return Btf(Path(path).read_bytes())
