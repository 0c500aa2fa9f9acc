"""The test packet builder: known checksum vectors, build/parse round trips
for generated packets, and truncated or malformed frames reported, never
crashing the parser."""
from __future__ import annotations

import ipaddress
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as hs

from ebpf_tutor import packets as P


def reference_checksum(data: bytes) -> int:
    """RFC 1071 done differently: one big integer, folded by divmod."""
    if len(data) % 2:
        data += b"\0"
    total = sum(int.from_bytes(data[i:i + 2], "big") for i in range(0, len(data), 2))
    while total > 0xFFFF:
        high, low = divmod(total, 0x10000)
        total = high + low
    return 0xFFFF - total


def test_known_ipv4_header_checksum():
    # the classic example header (Wikipedia, "IPv4 header checksum")
    header = bytes.fromhex("450000730000400040110000c0a80001c0a800c7")
    assert P.checksum(header) == 0xB861


def test_ipv4_header_matches_the_known_example():
    frame = P.ipv4(17, b"\0" * 95, src="192.168.0.1", dst="192.168.0.199", ident=0, ttl=64)
    assert frame[:20].hex() == "45000073" "00004000" "4011b861" "c0a80001" "c0a800c7"


def test_known_udp_checksum():
    # hand-computed: pseudo header 10.200.0.1 > 10.200.0.2 proto 17 len 9, ports 1 > 2, payload "A"
    seg = P.udp(1, 2, b"A", src="10.200.0.1", dst="10.200.0.2")
    words = [0x0AC8, 0x0001, 0x0AC8, 0x0002, 0x0011, 0x0009, 0x0001, 0x0002, 0x0009, 0x4100]
    total = sum(words)
    total = (total & 0xFFFF) + (total >> 16)
    assert struct.unpack("!H", seg[6:8])[0] == ~total & 0xFFFF


@settings(max_examples=200, deadline=None, database=None)
@given(hs.binary(max_size=200))
def test_checksum_agrees_with_a_second_implementation(data):
    assert P.checksum(data) == reference_checksum(data)


ipv4s = hs.integers(1, (1 << 32) - 2).map(lambda n: str(ipaddress.IPv4Address(n)))
ipv6s = hs.integers(1, (1 << 128) - 1).map(lambda n: str(ipaddress.IPv6Address(n)))
ports = hs.integers(0, 65535)


@hs.composite
def frames(draw):
    ip = draw(hs.sampled_from([4, 6]))
    src, dst = (draw(ipv4s), draw(ipv4s)) if ip == 4 else (draw(ipv6s), draw(ipv6s))
    kind = draw(hs.sampled_from(["udp", "tcp", "icmp"]))
    payload = draw(hs.binary(max_size=64))
    opts = draw(hs.binary(max_size=40)) if ip == 4 else b""
    opts = opts[: len(opts) // 4 * 4]
    extra = {"ip_options": opts} if ip == 4 else {}
    sport, dport = draw(ports), draw(ports)
    if kind == "udp":
        f = P.udp_packet(dport, sport=sport, payload=payload, ip=ip, src=src, dst=dst, **extra)
    elif kind == "tcp":
        flags = draw(hs.sampled_from(["S", "SA", "A", "PA", "FA", "R"]))
        f = P.tcp_packet(dport, sport=sport, flags=flags, payload=payload, ip=ip, src=src,
                         dst=dst, **extra)
    else:
        f = P.icmp_packet(ip=ip, payload=payload, src=src, dst=dst, **extra)
    return f, dict(ip=ip, src=src, dst=dst, kind=kind, sport=sport, dport=dport,
                   payload=payload, opts=opts)


@settings(max_examples=200, deadline=None, database=None)
@given(frames())
def test_build_then_parse_round_trip(case):
    frame, want = case
    p = P.parse(frame)
    assert p.ok, p.problems
    assert p.ip_version == want["ip"]
    assert (p.src, p.dst) == (want["src"], want["dst"])
    assert p.l4 == (want["kind"] if want["kind"] != "icmp" or want["ip"] == 4 else "icmpv6")
    assert p.l4_checksum_ok is True
    if want["ip"] == 4:
        assert p.ip_checksum_ok is True
        assert p.ihl == 5 + len(want["opts"]) // 4
    if want["kind"] != "icmp":
        assert (p.sport, p.dport) == (want["sport"], want["dport"])
    assert frame[p.payload_offset:] == want["payload"]
    assert len(frame) == p.length


@settings(max_examples=200, deadline=None, database=None)
@given(frames(), hs.data())
def test_truncated_frames_are_reported_not_fatal(case, data):
    frame, _ = case
    n = data.draw(hs.integers(0, len(frame) - 1))
    p = P.parse(P.truncate(frame, n))          # must not raise
    if n < P.parse(frame).payload_offset:
        assert p.problems, f"cut at {n} of {len(frame)} went unnoticed"
    assert P.describe(frame[:n])


def test_cut_at_layers():
    f = P.tcp_packet(ip_options=b"\x01" * 8)
    assert len(P.cut(f, "l3", 0)) == 14
    assert len(P.cut(f, "l4", 3)) == 14 + 28 + 3
    assert "truncated TCP header (3 of 20 bytes)" in P.parse(P.cut(f, "l4", 3)).problems
    with pytest.raises(ValueError):
        P.cut(P.arp_packet(), "l4")


@pytest.mark.parametrize("frame,problem", [
    (P.ethernet(P.ETH_P_IP, P.ipv4(6, b"x" * 40, ihl=4)), "less than 20 bytes"),
    (P.ethernet(P.ETH_P_IP, P.ipv4(17, b"x" * 8, total_length=10)), "shorter than its header"),
    (P.truncate(P.icmp_packet(ip_options=b"\x01" * 40), 14 + 24), "truncated IPv4 options"),
    (P.truncate(P.udp_packet(), 10), "truncated Ethernet header"),
    (P.cut(P.udp_packet(ip=6), "l3", 30), "truncated IPv6 header"),
    (P.ethernet(P.ETH_P_IP, P.ipv4(6, P.tcp(1, 2, data_offset=3))), "TCP header length 12"),
])
def test_malformed_frames_are_named(frame, problem):
    assert any(problem in x for x in P.parse(frame).problems)


def test_broken_checksums_are_seen():
    bad_ip = P.ethernet(P.ETH_P_IP, P.ipv4(17, P.udp(1, 2), checksum_value=0x1234))
    assert P.parse(bad_ip).ip_checksum_ok is False
    bad_udp = P.ethernet(P.ETH_P_IP, P.ipv4(17, P.udp(1, 2, b"hi", checksum_value=0x1234)))
    assert P.parse(bad_udp).l4_checksum_ok is False


def test_vlan_and_arp():
    tagged = P.ethernet(P.ETH_P_IP, P.ipv4(17, P.udp(1, 53)), vlan=42)
    p = P.parse(tagged)
    assert (p.vlan, p.l3_offset, p.dport) == (42, 18, 53)
    assert P.parse(P.arp_packet()).ethertype == P.ETH_P_ARP


def test_describe():
    assert P.describe(P.udp_packet(53)) == "IPv4 UDP 10.200.0.1:40000 > 10.200.0.2:53, 42 bytes"
    assert P.describe(P.tcp_packet(443, ip=6)).startswith("IPv6 TCP [fd00::1]:40000 > [fd00::2]:443")
    assert "echo request" in P.describe(P.icmp_packet())
