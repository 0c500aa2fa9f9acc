# ---
# jupyter:
#   kernelspec:
#     display_name: eBPF (root)
#     language: python
#     name: ebpf-root
# ---

# %% [markdown]
# # Lab 10.3: A BTF inspector in Python
#
# **Objective.** Read BTF, the kernel's description of its own types, with
# nothing but Python's `struct` module: the members of a struct (with their
# offsets in bits, bitfields included), the values of an enum (32 or 64
# bits, signed or not), and the parameters of a kernel function. This is
# what libbpf does when it resolves a CO-RE relocation, and what
# `bpftool btf dump` prints.
#
# **Expected observation.** The check hands your `BtfInspector` a BTF blob
# made from this kernel's (with one field renamed, so reading
# `/sys/kernel/btf/vmlinux` instead of the blob you are given shows), draws
# structs, enums and functions at random (among them a struct with
# bitfields, an enum with negative values and a 64-bit enum), and compares
# every answer with `bpftool btf dump file` of the same blob.
#
# **You will use:** `struct.unpack_from`, and the format of
# `include/uapi/linux/btf.h` (summed up below). Not `ebpf_tutor.kernel.btf`:
# the check refuses an inspector that imports it.

# %% [markdown]
# ## Background: the format
#
# A BTF blob is a header, a **type section** and a **string section**.
# Names are offsets into the string section (NUL-terminated). Type ids
# start at 1, in the order the types appear; id 0 is `void`.
#
# Every type starts with 12 bytes: `name_off`, `info`, `size_or_type`
# (all `u32`, little-endian here). `info` holds the **kind** in bits 24-28,
# **vlen** (how many entries follow) in bits 0-15 and **kflag** in bit 31.
# What follows depends on the kind:
#
# | kind | number | after the 12 bytes | meaning |
# |---|---|---|---|
# | STRUCT / UNION | 4 / 5 | vlen x `btf_member {name_off, type, offset}` | `size_or_type` is the size. If kflag is 1, `offset` holds the bitfield size in bits 24-31 and the bit offset in bits 0-23; otherwise it is the bit offset and there is no bitfield |
# | ENUM | 6 | vlen x `btf_enum {name_off, val}` | `val` is an `s32` if kflag is 1 (SIGNED), else a `u32` |
# | ENUM64 | 19 | vlen x `btf_enum64 {name_off, val_lo32, val_hi32}` | signed if kflag is 1 |
# | FUNC | 12 | nothing | `size_or_type` is the id of its FUNC_PROTO; vlen is the linkage |
# | FUNC_PROTO | 13 | vlen x `btf_param {name_off, type}` | `size_or_type` is the return type id |
#
# The walk over the type section is given: it records where each type
# starts. Decoding the entries is yours.

# %%
import struct

from ebpf_tutor.labs import check

# %% tags=["answer"]
HEADER = struct.Struct("<HBBIIIII")       # magic, version, flags, hdr_len, type_off, type_len, str_off, str_len
STRUCT, UNION, ENUM, FUNC, FUNC_PROTO, ENUM64 = 4, 5, 6, 12, 13, 19
EXTRA = {1: 4, 3: 12, 4: 12, 5: 12, 6: 8, 13: 8, 14: 4, 15: 12, 17: 4, 19: 12}   # bytes per entry
PER_TYPE = {1, 3, 14, 17}                 # kinds whose extra bytes come once, not per vlen


class BtfInspector:
    """Answers questions about one BTF blob."""

    def __init__(self, blob: bytes):
        magic, _v, _f, hdr_len, type_off, type_len, str_off, str_len = HEADER.unpack_from(blob)
        assert magic == 0xEB9F, "not BTF"
        self.data = blob[hdr_len + type_off: hdr_len + type_off + type_len]
        self.strings = blob[hdr_len + str_off: hdr_len + str_off + str_len]
        self.types = [None]               # id -> (kind, name, vlen, kflag, size_or_type, pos)
        self.by_name = {}                 # (kind, name) -> first id with that name
        pos = 0
        while pos < len(self.data):
            name_off, info, size_or_type = struct.unpack_from("<III", self.data, pos)
            kind, vlen, kflag = (info >> 24) & 0x1F, info & 0xFFFF, info >> 31
            name = self.name(name_off)
            self.by_name.setdefault((kind, name), len(self.types))
            self.types.append((kind, name, vlen, kflag, size_or_type, pos))
            extra = EXTRA.get(kind, 0)
            pos += 12 + (extra if kind in PER_TYPE else extra * vlen)

    def name(self, off: int) -> str:
        return self.strings[off: self.strings.index(b"\0", off)].decode()

    def _find(self, kinds, name):
        for kind in kinds:
            if (kind, name) in self.by_name:
                return self.types[self.by_name[(kind, name)]]
        raise KeyError(name)

    def struct(self, name: str) -> dict:
        """{"size": bytes, "members": [(name, type_id, bits_offset, bitfield_size), ...]}"""
        kind, _n, vlen, kflag, size, pos = self._find((STRUCT, UNION), name)
        # TODO 1: read vlen btf_member entries after the 12 bytes at `pos`;
        #         split `offset` when kflag is 1
        # BEGIN SOLUTION
        members = []
        for i in range(vlen):
            m_name, m_type, m_off = struct.unpack_from("<III", self.data, pos + 12 + 12 * i)
            bits, bitfield = (m_off & 0xFFFFFF, m_off >> 24) if kflag else (m_off, 0)
            members.append((self.name(m_name), m_type, bits, bitfield))
        return {"size": size, "members": members}
        # END SOLUTION

    def enum(self, name: str) -> dict:
        """{enumerator name: value} of an ENUM or ENUM64."""
        kind, _n, vlen, kflag, _size, pos = self._find((ENUM, ENUM64), name)
        # TODO 2: ENUM: vlen (name_off, val) pairs, val signed if kflag;
        #         ENUM64: (name_off, lo32, hi32), value = hi << 32 | lo, signed if kflag
        # BEGIN SOLUTION
        values = {}
        for i in range(vlen):
            if kind == ENUM:
                n, val = struct.unpack_from("<Ii" if kflag else "<II", self.data, pos + 12 + 8 * i)
            else:
                n, lo, hi = struct.unpack_from("<III", self.data, pos + 12 + 12 * i)
                val = hi << 32 | lo
                if kflag and val >= 1 << 63:
                    val -= 1 << 64
            values[self.name(n)] = val
        return values
        # END SOLUTION

    def func(self, name: str) -> dict:
        """{"ret_type_id": id, "params": [(name, type_id), ...]} of a kernel function."""
        _k, _n, _linkage, _kf, proto_id, _pos = self._find((FUNC,), name)
        # TODO 3: the FUNC points at its FUNC_PROTO: read the return type and
        #         the vlen btf_param entries there
        # BEGIN SOLUTION
        _k, _n, vlen, _kf, ret, pos = self.types[proto_id]
        params = [struct.unpack_from("<II", self.data, pos + 12 + 8 * i) for i in range(vlen)]
        return {"ret_type_id": ret, "params": [(self.name(n), t) for n, t in params]}
        # END SOLUTION


# %% [markdown]
# <details><summary>Hint 1: the idea (click to open)</summary>
#
# Every answer is at a fixed place: the type's record starts at `pos`, its
# entries start 12 bytes later, each entry is 12 bytes (members, enum64
# values) or 8 bytes (enum values, parameters). A name is an offset into
# the string section: `self.name(off)`.
# </details>
#
# <details><summary>Hint 2: the traps</summary>
#
# * With kflag 1, a member's `offset` is `bitfield_size << 24 | bit_offset`:
#   `sched_reset_on_fork` in `task_struct` is one of them.
# * An enum with kflag 1 is signed: unpack `val` with `"<i"`, not `"<I"`
#   (`RPM_INVALID` is -1).
# * ENUM64 splits the value in two `u32`: low first.
# * A FUNC has no parameters of its own: follow `size_or_type` to its FUNC_PROTO.
# </details>
#
# <details><summary>Hint 3: the code, nearly</summary>
#
# ```python
# m_name, m_type, m_off = struct.unpack_from("<III", self.data, pos + 12 + 12 * i)
# bits, bitfield = (m_off & 0xFFFFFF, m_off >> 24) if kflag else (m_off, 0)
# n, val = struct.unpack_from("<Ii" if kflag else "<II", self.data, pos + 12 + 8 * i)
# _k, _n, vlen, _kf, ret, pos = self.types[proto_id]
# ```
# </details>

# %% [markdown]
# ## Try it
#
# The running kernel's BTF: where `real_parent` sits in `task_struct`, one
# signed enum, and `vfs_read`'s parameters.

# %% tags=["try"]
btf = BtfInspector(open("/sys/kernel/btf/vmlinux", "rb").read())
task = btf.struct("task_struct")
print("task_struct:", task["size"], "bytes;",
      [m for m in task["members"] if m[0] in ("real_parent", "comm", "sched_reset_on_fork")])
print("rpm_status:", btf.enum("rpm_status"))
print("vfs_read:", [p for p, _ in btf.func("vfs_read")["params"]])

# %% [markdown]
# ## Check

# %% tags=["check"]
check("10.3", inspector=BtfInspector)
