"""Test packets: Ethernet frames with IPv4/IPv6 and UDP/TCP/ICMP, built byte
by byte with correct checksums (or deliberately broken), and read back.

    frame = udp_packet(dport=53, payload=b"hello")        # a whole frame
    frame = tcp_packet(dport=80, ip=6, flags="SA")
    short = cut(frame, "l4", 3)                            # 3 bytes into the TCP header
    parse(frame).dport                                     # 80

Packet programs (XDP, socket filters, TC) can be run on such frames with
BPF_PROG_TEST_RUN, no network needed. Layer builders (`ethernet`, `ipv4`,
`ipv6`, `udp`, `tcp`, `icmp_echo`) take keyword overrides for the fields a
malformed packet gets wrong (`ihl=`, `total_length=`, `checksum=`...).

Everything on the wire is big-endian ("network order").
"""
from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass, field

MAC_A, MAC_B = "02:00:00:00:00:01", "02:00:00:00:00:02"
IP4_A, IP4_B = "10.200.0.1", "10.200.0.2"
IP6_A, IP6_B = "fd00::1", "fd00::2"

ETH_P_IP, ETH_P_IPV6, ETH_P_ARP, ETH_P_8021Q = 0x0800, 0x86DD, 0x0806, 0x8100
IPPROTO_ICMP, IPPROTO_TCP, IPPROTO_UDP, IPPROTO_ICMPV6 = 1, 6, 17, 58
ETH_HLEN, IPV4_HLEN, IPV6_HLEN, UDP_HLEN, TCP_HLEN = 14, 20, 40, 8, 20
TCP_FLAGS = {"F": 0x01, "S": 0x02, "R": 0x04, "P": 0x08, "A": 0x10, "U": 0x20, "E": 0x40,
             "C": 0x80}
ICMP_TYPES = {0: "echo reply", 8: "echo request", 128: "echo request", 129: "echo reply"}
L4_NAMES = {IPPROTO_ICMP: "icmp", IPPROTO_TCP: "tcp", IPPROTO_UDP: "udp",
            IPPROTO_ICMPV6: "icmpv6"}


# ------------------------------------------------------------- checksums --
def checksum(data: bytes) -> int:
    """The Internet checksum (RFC 1071): the ones' complement of the ones'
    complement sum of 16-bit big-endian words (odd length: pad with a zero)."""
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def _pseudo_header(src: str, dst: str, proto: int, length: int) -> bytes:
    """What UDP, TCP and ICMPv6 checksums cover besides their own bytes."""
    s, d = ipaddress.ip_address(src), ipaddress.ip_address(dst)
    if s.version == 4:
        return s.packed + d.packed + struct.pack("!BBH", 0, proto, length)
    return s.packed + d.packed + struct.pack("!IxxxB", length, proto)


def _l4_checksum(src: str, dst: str, proto: int, segment: bytes) -> int:
    c = checksum(_pseudo_header(src, dst, proto, len(segment)) + segment)
    if c == 0 and proto == IPPROTO_UDP:
        return 0xFFFF                  # in UDP, 0 means "no checksum": send its twin
    return c


def _put16(buf: bytes, offset: int, value: int) -> bytes:
    return buf[:offset] + struct.pack("!H", value) + buf[offset + 2:]


# ---------------------------------------------------------------- layers --
def mac(text: str) -> bytes:
    return bytes(int(x, 16) for x in text.split(":"))


def ethernet(ethertype: int, payload: bytes = b"", *, src: str = MAC_A, dst: str = MAC_B,
             vlan: int | None = None) -> bytes:
    """An Ethernet II header (14 bytes; 18 with an 802.1Q VLAN tag) + payload."""
    tag = struct.pack("!HH", ETH_P_8021Q, vlan & 0x0FFF) if vlan is not None else b""
    return mac(dst) + mac(src) + tag + struct.pack("!H", ethertype) + payload


def ipv4(proto: int, payload: bytes = b"", *, src: str = IP4_A, dst: str = IP4_B, ttl: int = 64,
         ident: int = 1, tos: int = 0, options: bytes = b"", dont_fragment: bool = True,
         more_fragments: bool = False, frag_offset: int = 0, ihl: int | None = None,
         total_length: int | None = None, checksum_value: int | None = None) -> bytes:
    """An IPv4 header + payload. Options are padded to a multiple of 4 bytes;
    `ihl` (header length in 32-bit words), `total_length` and
    `checksum_value` override the correct values to make malformed packets."""
    options += b"\0" * (-len(options) % 4)
    real_ihl = 5 + len(options) // 4
    if real_ihl > 15:
        raise ValueError("IPv4 options are at most 40 bytes")
    flags = (0x4000 if dont_fragment else 0) | (0x2000 if more_fragments else 0)
    header = struct.pack("!BBHHHBBH4s4s", 4 << 4 | (real_ihl if ihl is None else ihl), tos,
                         total_length if total_length is not None
                         else real_ihl * 4 + len(payload),
                         ident, flags | frag_offset // 8, ttl, proto, 0,
                         ipaddress.IPv4Address(src).packed, ipaddress.IPv4Address(dst).packed)
    header += options
    csum = checksum(header) if checksum_value is None else checksum_value
    return _put16(header, 10, csum) + payload


def ipv6(next_header: int, payload: bytes = b"", *, src: str = IP6_A, dst: str = IP6_B,
         hop_limit: int = 64, traffic_class: int = 0, flow_label: int = 0,
         payload_length: int | None = None) -> bytes:
    """An IPv6 header (40 bytes, no extension headers) + payload. IPv6 has
    no header checksum."""
    first = 6 << 28 | traffic_class << 20 | flow_label
    length = len(payload) if payload_length is None else payload_length
    return (struct.pack("!IHBB", first, length, next_header, hop_limit)
            + ipaddress.IPv6Address(src).packed + ipaddress.IPv6Address(dst).packed + payload)


def udp(sport: int, dport: int, payload: bytes = b"", *, src: str = IP4_A, dst: str = IP4_B,
        length: int | None = None, checksum_value: int | None = None) -> bytes:
    """A UDP header (8 bytes) + payload; src/dst are the IP addresses the
    checksum covers (IPv4 or IPv6)."""
    seg = struct.pack("!HHHH", sport, dport, length if length is not None else 8 + len(payload),
                      0) + payload
    csum = _l4_checksum(src, dst, IPPROTO_UDP, seg) if checksum_value is None else checksum_value
    return _put16(seg, 6, csum)


def tcp(sport: int, dport: int, payload: bytes = b"", *, src: str = IP4_A, dst: str = IP4_B,
        flags: str = "S", seq: int = 1, ack: int = 0, window: int = 65535,
        options: bytes = b"", data_offset: int | None = None,
        checksum_value: int | None = None) -> bytes:
    """A TCP header (20 bytes + options) + payload. `flags` is a string of
    letters: F S R P A U E C (e.g. "SA" for SYN+ACK)."""
    options += b"\0" * (-len(options) % 4)
    doff = 5 + len(options) // 4 if data_offset is None else data_offset
    bits = 0
    for letter in flags:
        bits |= TCP_FLAGS[letter]
    seg = struct.pack("!HHIIBBHHH", sport, dport, seq, ack, doff << 4, bits, window, 0, 0)
    seg += options + payload
    csum = _l4_checksum(src, dst, IPPROTO_TCP, seg) if checksum_value is None else checksum_value
    return _put16(seg, 16, csum)


def icmp_echo(payload: bytes = b"ping", *, ident: int = 1, seq: int = 1, reply: bool = False,
              v6: bool = False, src: str = IP6_A, dst: str = IP6_B) -> bytes:
    """An ICMP (or ICMPv6) echo request or reply. ICMPv6's checksum covers a
    pseudo-header, so it needs the IPv6 addresses."""
    kind = (129 if reply else 128) if v6 else (0 if reply else 8)
    msg = struct.pack("!BBHHH", kind, 0, 0, ident, seq) + payload
    csum = _l4_checksum(src, dst, IPPROTO_ICMPV6, msg) if v6 else checksum(msg)
    return _put16(msg, 2, csum)


# ---------------------------------------------------------- whole frames --
def _ip(ip: int, proto: int, segment: bytes, src: str | None, dst: str | None,
        ip_options: bytes, **ip_kw) -> bytes:
    if ip == 4:
        return ethernet(ETH_P_IP, ipv4(proto, segment, src=src or IP4_A, dst=dst or IP4_B,
                                       options=ip_options, **ip_kw))
    if ip == 6:
        return ethernet(ETH_P_IPV6, ipv6(proto, segment, src=src or IP6_A, dst=dst or IP6_B,
                                         **ip_kw))
    raise ValueError("ip is 4 or 6")


def _addrs(ip: int, src: str | None, dst: str | None) -> tuple[str, str]:
    return (src or (IP4_A if ip == 4 else IP6_A)), (dst or (IP4_B if ip == 4 else IP6_B))


def udp_packet(dport: int = 53, *, sport: int = 40000, payload: bytes = b"", ip: int = 4,
               src: str | None = None, dst: str | None = None, ip_options: bytes = b"",
               **ip_kw) -> bytes:
    """Ethernet + IPv4 or IPv6 + UDP, every checksum right."""
    s, d = _addrs(ip, src, dst)
    return _ip(ip, IPPROTO_UDP, udp(sport, dport, payload, src=s, dst=d), s, d, ip_options, **ip_kw)


def tcp_packet(dport: int = 80, *, sport: int = 40000, flags: str = "S", payload: bytes = b"",
               ip: int = 4, src: str | None = None, dst: str | None = None,
               ip_options: bytes = b"", tcp_options: bytes = b"", **ip_kw) -> bytes:
    """Ethernet + IPv4 or IPv6 + TCP, every checksum right."""
    s, d = _addrs(ip, src, dst)
    seg = tcp(sport, dport, payload, src=s, dst=d, flags=flags, options=tcp_options)
    return _ip(ip, IPPROTO_TCP, seg, s, d, ip_options, **ip_kw)


def icmp_packet(*, ip: int = 4, reply: bool = False, payload: bytes = b"ping",
                src: str | None = None, dst: str | None = None, ip_options: bytes = b"",
                **ip_kw) -> bytes:
    """Ethernet + IPv4 + ICMP echo, or Ethernet + IPv6 + ICMPv6 echo."""
    s, d = _addrs(ip, src, dst)
    msg = icmp_echo(payload, reply=reply, v6=ip == 6, src=s, dst=d)
    return _ip(ip, IPPROTO_ICMPV6 if ip == 6 else IPPROTO_ICMP, msg, s, d, ip_options, **ip_kw)


def arp_packet() -> bytes:
    """An ARP request (who has 10.200.0.2?): a frame that is not IP at all."""
    body = struct.pack("!HHBBH6s4s6s4s", 1, ETH_P_IP, 6, 4, 1, mac(MAC_A),
                       ipaddress.IPv4Address(IP4_A).packed, b"\0" * 6,
                       ipaddress.IPv4Address(IP4_B).packed)
    return ethernet(ETH_P_ARP, body, dst="ff:ff:ff:ff:ff:ff")


def truncate(frame: bytes, length: int) -> bytes:
    """The first `length` bytes: a frame cut short, as a broken sender or a
    capture with a small snap length would give."""
    return frame[:length]


def cut(frame: bytes, layer: str, keep: int = 0) -> bytes:
    """The frame cut `keep` bytes after the start of a layer: "l3" (the IP
    header), "l4" (TCP/UDP/ICMP header) or "payload"."""
    p = parse(frame)
    start = {"l3": p.l3_offset, "l4": p.l4_offset, "payload": p.payload_offset}[layer]
    if start is None:
        raise ValueError(f"this frame has no {layer} layer to cut at")
    return frame[:start + keep]


# ---------------------------------------------------------------- parsing --
@dataclass
class Parsed:
    """What `parse` read from a frame. Offsets are from the start of the
    frame; `problems` lists what was truncated or malformed (empty: none)."""
    length: int
    ethertype: int | None = None
    vlan: int | None = None
    l3_offset: int | None = None
    ip_version: int | None = None
    src: str | None = None
    dst: str | None = None
    ihl: int | None = None
    ttl: int | None = None
    proto: int | None = None
    ip_checksum_ok: bool | None = None
    l4_offset: int | None = None
    l4: str | None = None
    sport: int | None = None
    dport: int | None = None
    tcp_flags: str | None = None
    icmp_type: int | None = None
    l4_checksum_ok: bool | None = None
    payload_offset: int | None = None
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def parse(frame: bytes) -> Parsed:
    """Read Ethernet, IPv4/IPv6, and TCP/UDP/ICMP headers, checking lengths
    and checksums. Never raises on bad input: problems are listed instead."""
    p = Parsed(len(frame))
    if len(frame) < ETH_HLEN:
        p.problems.append(f"truncated Ethernet header ({len(frame)} of 14 bytes)")
        return p
    off = 12
    (p.ethertype,) = struct.unpack_from("!H", frame, off)
    if p.ethertype == ETH_P_8021Q:
        if len(frame) < 18:
            p.problems.append("truncated VLAN tag")
            return p
        tci, p.ethertype = struct.unpack_from("!HH", frame, 14)
        p.vlan, off = tci & 0x0FFF, 16
    p.l3_offset = off + 2
    if p.ethertype == ETH_P_IP:
        _parse_ipv4(frame, p)
    elif p.ethertype == ETH_P_IPV6:
        _parse_ipv6(frame, p)
    return p


def _parse_ipv4(frame: bytes, p: Parsed) -> None:
    l3 = p.l3_offset
    p.ip_version = 4
    if len(frame) < l3 + IPV4_HLEN:
        p.problems.append(f"truncated IPv4 header ({len(frame) - l3} of 20 bytes)")
        return
    vihl, _tos, total, _id, frag, p.ttl, p.proto, _c, s, d = struct.unpack_from(
        "!BBHHHBBH4s4s", frame, l3)
    p.ihl, p.src, p.dst = vihl & 0x0F, str(ipaddress.IPv4Address(s)), str(ipaddress.IPv4Address(d))
    if vihl >> 4 != 4:
        p.problems.append(f"IPv4 version field is {vihl >> 4}")
    if p.ihl < 5:
        p.problems.append(f"IPv4 header length {p.ihl * 4} is less than 20 bytes")
        return
    if len(frame) < l3 + p.ihl * 4:
        p.problems.append(f"truncated IPv4 options ({len(frame) - l3} of {p.ihl * 4} bytes)")
        return
    p.ip_checksum_ok = checksum(frame[l3:l3 + p.ihl * 4]) == 0
    if total < p.ihl * 4:
        p.problems.append(f"IPv4 total length {total} is shorter than its header")
    if frag & 0x1FFF:
        return                      # a later fragment: no L4 header here
    _parse_l4(frame, p, l3 + p.ihl * 4, min(len(frame), l3 + max(total, p.ihl * 4)))


def _parse_ipv6(frame: bytes, p: Parsed) -> None:
    l3 = p.l3_offset
    p.ip_version = 6
    if len(frame) < l3 + IPV6_HLEN:
        p.problems.append(f"truncated IPv6 header ({len(frame) - l3} of 40 bytes)")
        return
    first, plen, p.proto, p.ttl = struct.unpack_from("!IHBB", frame, l3)
    p.src = str(ipaddress.IPv6Address(frame[l3 + 8:l3 + 24]))
    p.dst = str(ipaddress.IPv6Address(frame[l3 + 24:l3 + 40]))
    if first >> 28 != 6:
        p.problems.append(f"IPv6 version field is {first >> 28}")
    _parse_l4(frame, p, l3 + IPV6_HLEN, min(len(frame), l3 + IPV6_HLEN + plen))


def _parse_l4(frame: bytes, p: Parsed, l4: int, end: int) -> None:
    p.l4_offset, p.l4 = l4, L4_NAMES.get(p.proto)
    need = {"tcp": TCP_HLEN, "udp": UDP_HLEN, "icmp": 8, "icmpv6": 8}.get(p.l4)
    if need is None:
        return
    if len(frame) < l4 + need:
        p.problems.append(f"truncated {p.l4.upper()} header ({max(len(frame) - l4, 0)} of "
                          f"{need} bytes)")
        return
    if p.l4 in ("tcp", "udp"):
        p.sport, p.dport = struct.unpack_from("!HH", frame, l4)
    if p.l4 == "tcp":
        doff = frame[l4 + 12] >> 4
        bits = frame[l4 + 13]
        p.tcp_flags = "".join(k for k, v in TCP_FLAGS.items() if bits & v)
        if doff < 5:
            p.problems.append(f"TCP header length {doff * 4} is less than 20 bytes")
            return
        if len(frame) < l4 + doff * 4:
            p.problems.append(f"truncated TCP options ({len(frame) - l4} of {doff * 4} bytes)")
            return
        p.payload_offset = l4 + doff * 4
    elif p.l4 == "udp":
        p.payload_offset = l4 + UDP_HLEN
    else:
        p.icmp_type = frame[l4]
        p.payload_offset = l4 + 8
    segment = frame[l4:end]
    if p.l4 == "icmp":
        p.l4_checksum_ok = checksum(segment) == 0
    elif p.src is not None:
        p.l4_checksum_ok = checksum(_pseudo_header(p.src, p.dst, p.proto, len(segment))
                                   + segment) == 0


def describe(frame: bytes) -> str:
    """One line about a frame, e.g. `IPv4 UDP 10.200.0.1:40000 > 10.200.0.2:53, 42 bytes`."""
    p = parse(frame)
    if p.ip_version is None:
        text = f"ethertype 0x{p.ethertype:04x}" if p.ethertype is not None else "not Ethernet"
    elif p.src is None:
        text = f"IPv{p.ip_version}"
    else:
        l4 = L4_NAMES.get(p.proto, f"proto {p.proto}").upper()
        a, b = (f"[{x}]" if p.ip_version == 6 and p.sport is not None else x
                for x in (p.src, p.dst))
        if p.sport is not None:
            a, b = f"{a}:{p.sport}", f"{b}:{p.dport}"
        text = f"IPv{p.ip_version} {l4} {a} > {b}"
        if p.icmp_type in ICMP_TYPES:
            text = f"IPv{p.ip_version} {l4} {ICMP_TYPES[p.icmp_type]} {a} > {b}"
    text += f", {p.length} bytes"
    if p.problems:
        text += " (" + "; ".join(p.problems) + ")"
    return text
