"""The network lab: sandboxes, the guard, traffic with known counts, TC."""
import socket
import struct

import pytest

from tests.conftest import needs_root


# ------------------------------------------------------------------ guard --
def test_guard_refuses_lo_and_the_uplink():
    from ebpf_tutor import net
    up = net.uplink()                      # read-only lookup of the default route
    for ifname in ["lo", up or "eth0"]:
        with pytest.raises(net.NotOurInterface, match="not created by an ebpf_tutor sandbox"):
            net.guard(None, ifname)
        assert not net.is_ours(None, ifname)
    net.guard(None, "lo", allow_foreign=True)   # the explicit override


def test_uplink_is_the_default_route_interface():
    from ebpf_tutor import net
    routes = open("/proc/net/route").read().splitlines()[1:]
    default = [r.split()[0] for r in routes if r.split()[1] == "00000000"]
    assert net.uplink() == (default[0] if default else None)


@needs_root
def test_guard_refuses_interfaces_of_our_namespace_we_did_not_create():
    from ebpf_tutor import net
    with net.VethPair() as lab:
        net.guard(lab.ns["b"], lab.ifname["b"])          # ours: fine
        with pytest.raises(net.NotOurInterface):
            net.guard(lab.ns["b"], "lo")                   # in our namespace, but not ours
        with pytest.raises(net.NotOurInterface):
            net.guard(None, lab.ifname["b"])               # same name, host namespace
    with pytest.raises(net.NotOurInterface):
        net.guard(lab.ns["b"], lab.ifname["b"])          # closed: not ours any more


# -------------------------------------------------------------- sandboxes --
@needs_root
def test_veth_pair_keeps_its_api():
    from ebpf_tutor import net
    with net.VethPair() as lab:
        assert set(lab.ns) == {"a", "b"} and lab.ifname == {"a": "veth-a", "b": "veth-b"}
        assert (lab.ip_a, lab.ip_b, lab.prefix) == ("10.200.0.1", "10.200.0.2", 24)
        assert lab.ifindex("b") > 1
        assert lab.where("b") == (lab.ns["b"], "veth-b")
        r = lab.run_in("a", ["ping", "-c", "1", "-W", "2", lab.ip_b])
        assert r.returncode == 0, r.stdout + r.stderr
        assert set(lab.ns.values()) <= set(net.our_namespaces())
    assert not set(lab.ns.values()) & set(net.our_namespaces())


@needs_root
def test_a_fresh_pair_carries_its_first_packet_at_once():
    """Both ends up when the sandbox is returned: no second of lost packets
    while the kernel's link watcher catches up (it did when both ends had
    ifindex 2)."""
    import time
    from ebpf_tutor import net
    with net.VethPair() as lab:
        assert lab.ifindex("a") != lab.ifindex("b")
        t0 = time.monotonic()
        r = lab.run_in("a", ["ping", "-c", "1", "-W", "5", lab.ip_b])
        assert r.returncode == 0, r.stdout + r.stderr
        assert time.monotonic() - t0 < 0.9     # an ARP retry would take 1 s


@needs_root
def test_quiet_pair_carries_only_our_packets():
    from ebpf_tutor import net, traffic
    with net.VethPair(quiet=True) as lab:
        before = lab.stats("b")["rx_packets"]
        assert traffic.ping(lab, "a", lab.ip_b, count=4).received == 4
        assert lab.stats("b")["rx_packets"] - before == 4     # no ARP, no IPv6 chatter


@needs_root
def test_star_routes_leaves_through_the_hub():
    from ebpf_tutor import net, traffic
    from ebpf_tutor.sandbox.sweep import owner_pid
    import os
    with net.Star(["client", "b1", "b2"], hub="lb") as lan:
        assert all(owner_pid(n) == os.getpid() for n in lan.ns.values())
        assert traffic.ping(lan, "client", lan.ip["b2"], count=2).received == 2
        assert net.is_ours(lan.ns["lb"], "to-b1") and net.is_ours(lan.ns["b1"], "eth0")
        with pytest.raises(ValueError, match="one interface per leaf"):
            lan.where("lb")
        lan.add_address("b1", "10.201.100.1")
        lan.add_route("lb", "10.201.100.1/32", via=lan.ip["b1"])
        with traffic.TcpServer(lan.ns["b1"], 8080, "b1") as srv:
            ex = traffic.tcp_exchange(lan.ns["client"], "10.201.100.1", 8080, "hello")
        assert ex.ok and ex.reply == "b1 hello" and srv.requests == ["hello"]
    assert not set(lan.ns.values()) & set(net.our_namespaces())
    assert not net.is_ours(lan.ns["lb"], "to-b1")


@needs_root
@pytest.mark.parametrize("exc", [RuntimeError, KeyboardInterrupt])
def test_sandbox_is_removed_on_error_and_ctrl_c(exc):
    from ebpf_tutor import net
    with pytest.raises(exc):
        with net.Star(["x", "y"]) as lan:
            raise exc()
    assert not set(lan.ns.values()) & set(net.our_namespaces())
    assert not any(net.is_ours(lan.ns["hub"], f"to-{leaf}") for leaf in "xy")


# ---------------------------------------------------------------- traffic --
@needs_root
def test_udp_flows_are_counted_per_source_and_flow():
    from ebpf_tutor import net, traffic
    with net.Star(["one", "two", "sink"]) as lan, \
            traffic.UdpSink(lan.ns["sink"], 9000) as sink, \
            traffic.UdpFlow(lan.ns["one"], lan.ip["sink"], 9000, flow_id=1) as f1, \
            traffic.UdpFlow(lan.ns["two"], lan.ip["sink"], 9000, flow_id=2) as f2:
        f1.send(30)
        f2.send(7)
        sink.settle()
        assert sink.by_src == {lan.ip["one"]: 30, lan.ip["two"]: 7}
        assert sink.by_flow == {1: 30, 2: 7} and sink.total == 37


def _ones_complement_ok(data: bytes) -> bool:
    from ebpf_tutor.sandbox.packets import checksum
    return checksum(data) == 0


def test_crafted_frames_have_valid_checksums():
    from ebpf_tutor import traffic
    macs = ("02:00:00:00:00:01", "02:00:00:00:00:02")
    for frame in [traffic.udp_frame(*macs, "10.0.0.1", "10.0.0.2", 1234, 53, b"hello!"),
                  traffic.tcp_syn_frame(*macs, "10.0.0.1", "10.0.0.2", 1234, 80),
                  traffic.icmp_echo_frame(*macs, "10.0.0.1", "10.0.0.2", payload=b"abc")]:
        assert frame[12:14] == b"\x08\x00"
        ip, l4 = frame[14:34], frame[34:]
        assert _ones_complement_ok(ip)
        proto = ip[9]
        if proto == 1:
            assert _ones_complement_ok(l4)
        else:
            pseudo = ip[12:20] + struct.pack("!BBH", 0, proto, len(l4))
            assert _ones_complement_ok(pseudo + l4)


@needs_root
def test_raw_frames_arrive_exactly_as_sent():
    from ebpf_tutor import net, traffic
    with net.VethPair(quiet=True) as lab, traffic.UdpSink(lab.ns["b"], 5353) as sink:
        frames = [traffic.udp_frame(lab.mac("a"), lab.mac("b"), lab.ip_a, lab.ip_b, 4000 + i, 5353,
                                b"x" * i) for i in range(25)]
        assert traffic.send_frames(*lab.where("a"), frames) == 25
        sink.settle()
        assert sink.total == 25
        with pytest.raises(net.NotOurInterface):
            traffic.send_frames(None, "lo", frames)


@needs_root
def test_socket_in_lives_in_the_namespace():
    from ebpf_tutor import net
    with net.VethPair() as lab:
        s = net.socket_in(lab.ns["b"])
        try:
            s.bind((lab.ip_b, 0))            # the address exists only inside namespace b
        finally:
            s.close()
        with pytest.raises(OSError):
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM).bind((lab.ip_b, 0))


# --------------------------------------------------------------------- TC --
TC_COUNT = """
BPF_ARRAY(seen, u64, 1);
int tc_count(struct __sk_buff *skb) { seen.increment(0); return 0; }   /* TC_ACT_OK */
"""


@needs_root
def test_tc_attach_counts_and_detaches():
    from ebpf_tutor import Program, net, traffic, tc
    with net.VethPair(quiet=True) as lab, Program(TC_COUNT) as prog:
        with pytest.raises(net.NotOurInterface):
            tc.attach(prog, "tc_count", None, "lo")
        with tc.attach(prog, "tc_count", *lab.where("b"), direction="ingress"):
            assert traffic.ping(lab, "a", lab.ip_b, count=3).received == 3
        assert prog["seen"][0].value == 3
        qdiscs = lab.run_in("b", ["tc", "qdisc", "show", "dev", lab.ifname["b"]]).stdout
        assert "clsact" not in qdiscs
