"""Builders: integers as key/value bytes, ctypes structs, test packets."""
from __future__ import annotations

import ctypes as ct
from typing import Any, Sequence


def make_key(value: int, size: int = 4, signed: bool = False, byteorder: str = "little") -> bytes:
    """An integer as the bytes of a map key: make_key(42) == b'*\\0\\0\\0'."""
    return int(value).to_bytes(size, byteorder, signed=signed)


def make_value(value: int, size: int = 8, signed: bool = False, byteorder: str = "little") -> bytes:
    """An integer as the bytes of a map value (8 bytes by default, like u64)."""
    return int(value).to_bytes(size, byteorder, signed=signed)


def make_struct(ctype, **fields: Any) -> bytes:
    """The bytes of a ctypes struct with the given fields set (others zero).
    Strings are encoded; lists fill arrays."""
    obj = ctype()
    for name, value in fields.items():
        if not hasattr(obj, name):
            raise AttributeError(f"{ctype.__name__} has no field {name!r}; fields: "
                                 f"{', '.join(f[0] for f in ctype._fields_)}")
        if isinstance(value, str):
            value = value.encode()
        if isinstance(value, (list, tuple)):
            arr = getattr(obj, name)
            for i, v in enumerate(value):
                arr[i] = v
            continue
        setattr(obj, name, value)
    return bytes(obj)


def parse_struct(ctype, data: bytes):
    """A ctypes struct from bytes (the size must match exactly)."""
    if len(data) != ct.sizeof(ctype):
        raise ValueError(f"{ctype.__name__} is {ct.sizeof(ctype)} bytes, got {len(data)}")
    return ctype.from_buffer_copy(data)


def struct_type(name: str, fields: Sequence[tuple[str, Any]]):
    """A ctypes struct type from (name, type) pairs; types may be ctypes
    types or short names: u8 u16 u32 u64 s8 s16 s32 s64, or 'char[16]'."""
    names = {"u8": ct.c_uint8, "u16": ct.c_uint16, "u32": ct.c_uint32, "u64": ct.c_uint64,
             "s8": ct.c_int8, "s16": ct.c_int16, "s32": ct.c_int32, "s64": ct.c_int64}
    out = []
    for fname, ftype in fields:
        if isinstance(ftype, str):
            if ftype.startswith("char[") and ftype.endswith("]"):
                ftype = ct.c_char * int(ftype[5:-1])
            else:
                ftype = names[ftype]
        out.append((fname, ftype))
    return type(name, (ct.Structure,), {"_fields_": out})



def build_packet(protocol: str = "tcp", *, ip: int = 4, sport: int | None = None,
                 dport: int | None = None, payload: bytes = b"", src: str | None = None,
                 dst: str | None = None, ttl: int | None = None, tcp_flags: str = "S",
                 ethernet: bool = True, **ip_kw) -> bytes:
    """A test packet: Ethernet + IPv4/IPv6 + TCP, UDP or ICMP echo, lengths
    and checksums right. One entry point over the builders of
    `ebpf_tutor.sandbox.packets` (tcp_packet, udp_packet, icmp_packet), which
    `ebpf_tutor.testing` re-exports with `parse`; `ethernet=False` gives the IP packet."""
    from ..sandbox import packets
    if ttl is not None:
        ip_kw["ttl" if ip == 4 else "hop_limit"] = ttl
    proto = protocol.lower()
    if proto == "tcp":
        frame = packets.tcp_packet(dport if dport is not None else 80, sport=sport or 40000,
                                   flags=tcp_flags, payload=payload, ip=ip, src=src, dst=dst, **ip_kw)
    elif proto == "udp":
        frame = packets.udp_packet(dport if dport is not None else 53, sport=sport or 40000,
                                   payload=payload, ip=ip, src=src, dst=dst, **ip_kw)
    elif proto in ("icmp", "icmpv6"):
        frame = packets.icmp_packet(ip=6 if proto == "icmpv6" else ip, payload=payload or b"ping",
                                    src=src, dst=dst, **ip_kw)
    else:
        raise ValueError(f"protocol must be tcp, udp or icmp, not {protocol!r}")
    return frame if ethernet else frame[14:]
