"""TC programs on sandbox interfaces (attach, read back, detach, refuse the
host's), qdisc detection and installation, test runs with __sk_buff fields,
socket filters and SOCKMAP, and the traffic helpers of chapter 8."""
import ctypes as ct
import socket
import subprocess
import time

import pytest

from tests.conftest import needs_root

SRC = r"""
#include <uapi/linux/bpf.h>
#include <uapi/linux/pkt_cls.h>
BPF_ARRAY(seen, u64, 2);
int tc_in(struct __sk_buff *skb)   { seen.increment(0); return TC_ACT_OK; }
int tc_out(struct __sk_buff *skb)  { seen.increment(1); return TC_ACT_OK; }
int tc_drop(struct __sk_buff *skb) { return TC_ACT_SHOT; }
int tc_mark(struct __sk_buff *skb) {
    skb->tstamp = skb->tstamp + 1000;
    skb->priority = 0x10020;
    skb->mark = 42;
    return TC_ACT_OK;
}
int sf_none(struct __sk_buff *skb) { return 0; }
"""


@pytest.fixture(scope="module")
def prog():
    from ebpf_tutor import Program
    with Program(SRC, name="test_tc") as p:
        yield p


def qdisc_kinds(lab, side: str = "a") -> list[str]:
    out = lab.run_in(side, ["tc", "qdisc", "show", "dev", lab.ifname[side]]).stdout
    return [line.split()[1] for line in out.splitlines() if line.startswith("qdisc")]


def bpftool_knows(prog_id: int) -> bool:
    return subprocess.run(["bpftool", "prog", "show", "id", str(prog_id)],
                          capture_output=True).returncode == 0


@needs_root
def test_both_directions_read_back_count_and_detach(prog):
    from ebpf_tutor import flows, net, tc
    before = [prog["seen"][i].value for i in range(2)]
    with net.VethPair() as lab:
        where = (lab.ns["a"], lab.ifname["a"])
        with tc.attach(prog, "tc_in", *where, "ingress") as f_in, \
                tc.attach(prog, "tc_out", *where, "egress") as f_out:
            listed = {(f["direction"], f["name"]) for f in tc.filters(*where)}
            assert listed == {("ingress", "tc_in"), ("egress", "tc_out")}
            assert all(f["direct_action"] for f in tc.filters(*where))
            assert f_in.prog_id == tc.prog_id(tc.load(prog, "tc_in").fd)
            shown = lab.run_in("a", ["tc", "filter", "show", "dev", "veth-a", "egress"]).stdout
            assert "tc_out" in shown and "direct-action" in shown
            assert flows.icmp_echo(lab.ns["a"], lab.ip_b, 3) == 3
        assert tc.filters(*where) == []
        assert "clsact" not in qdisc_kinds(lab)
        assert not f_out.attached
    after = [prog["seen"][i].value for i in range(2)]
    assert after[0] - before[0] >= 3 and after[1] - before[1] >= 3


@needs_root
def test_detaching_one_filter_keeps_the_other_and_the_clsact(prog):
    from ebpf_tutor import net, tc
    with net.VethPair() as lab:
        where = (lab.ns["a"], lab.ifname["a"])
        f_in = tc.attach(prog, "tc_in", *where, "ingress")
        f_out = tc.attach(prog, "tc_out", *where, "egress")
        f_out.detach()
        f_out.detach()                                   # twice is fine
        assert [f["name"] for f in tc.filters(*where)] == ["tc_in"]
        assert "clsact" in qdisc_kinds(lab)
        f_in.detach()
        assert "clsact" not in qdisc_kinds(lab)


@needs_root
def test_shot_drops_and_error_in_with_block_still_detaches(prog):
    from ebpf_tutor import flows, net, tc
    with net.VethPair() as lab:
        where = (lab.ns["a"], lab.ifname["a"])
        with pytest.raises(RuntimeError):
            with tc.attach(prog, "tc_drop", *where, "egress"):
                assert flows.icmp_echo(lab.ns["a"], lab.ip_b, 2, timeout=0.3) == 0
                raise RuntimeError("boom")
        assert tc.filters(*where) == []
        # the ARP requests were dropped too: the next try waits for ARP's 1 s retransmit
        assert flows.icmp_echo(lab.ns["a"], lab.ip_b, 2, timeout=2.5) == 2


@needs_root
def test_refuses_interfaces_no_sandbox_made(prog):
    from ebpf_tutor import net, tc
    for ns_name, ifname in [(None, "lo"), (None, net.uplink() or "eth0"), ("ebt-nope", "veth-a")]:
        with pytest.raises(net.NotOurInterface):
            tc.attach(prog, "tc_drop", ns_name, ifname, "egress")
        with pytest.raises(net.NotOurInterface):
            tc.root_qdisc(ns_name, ifname, "tbf", rate="1mbit", burst=16000, latency=50000)
        with pytest.raises(net.NotOurInterface):
            tc.set_tx_checksum(ns_name, ifname, False)
        with pytest.raises(net.NotOurInterface):
            tc.attach_socket_filter(prog, "sf_none", ns_name, ifname)
    with net.VethPair() as lab:
        with pytest.raises(ValueError):
            tc.attach(prog, "tc_drop", lab.ns["a"], lab.ifname["a"], "sideways")


@needs_root
def test_filter_outlives_program_close_until_the_sandbox_goes():
    from ebpf_tutor import Program, net, tc
    with net.VethPair() as lab:
        p = Program(SRC, name="test_tc_lifetime")
        f = tc.attach(p, "tc_out", lab.ns["a"], lab.ifname["a"], "egress")
        p.close()
        assert bpftool_knows(f.prog_id)                 # the filter holds it
    deadline = time.monotonic() + 3
    while bpftool_knows(f.prog_id) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not bpftool_knows(f.prog_id)


@needs_root
def test_available_qdiscs_agree_with_iproute2():
    from ebpf_tutor import net, tc
    found = tc.available_qdiscs()
    assert found["tbf"] and found["htb"]
    with net.VethPair() as lab:
        for kind, ok in found.items():
            args = {"tbf": "rate 1mbit burst 32k latency 10ms", "netem": "delay 10ms",
                    "etf": "clockid CLOCK_TAI delta 100000"}.get(kind, "")
            r = lab.run_in("a", ["tc", "qdisc", "add", "dev", "veth-a", "root", kind, *args.split()])
            lab.run_in("a", ["tc", "qdisc", "del", "dev", "veth-a", "root"])
            unknown = "unknown" in r.stderr
            assert ok == (not unknown), (kind, r.stderr)


@needs_root
def test_root_qdiscs_install_count_and_go_away():
    from ebpf_tutor import FeatureUnavailable, flows, net, tc
    with net.VethPair() as lab:
        a = (lab.ns["a"], lab.ifname["a"])
        with tc.root_qdisc(*a, "htb", classes={0x10: "1gbit", 0x20: "8mbit"}) as q:
            assert qdisc_kinds(lab)[0] == "htb"
            flows.udp_send(lab.ns["a"], lab.ip_b, 9000, 5)
            rows = {(r["what"], r["handle"]): r for r in q.stats()}
            assert rows[("class", "1:10")]["packets"] >= 5       # the default class
            assert ("class", "1:20") in rows
        assert qdisc_kinds(lab) == ["noqueue"]
        with tc.root_qdisc(*a, "tbf", rate="8mbit", burst=16000, latency=50000):
            assert qdisc_kinds(lab)[0] == "tbf"
        assert qdisc_kinds(lab) == ["noqueue"]
        if not tc.has_qdisc("fq"):
            with pytest.raises(FeatureUnavailable):
                tc.root_qdisc(*a, "fq")
            assert qdisc_kinds(lab) == ["noqueue"]


@needs_root
def test_test_run_gives_back_skb_fields(prog):
    from ebpf_tutor import packets, tc
    frame = packets.udp_packet(7000, payload=b"x")
    r = tc.test_run(prog, "tc_mark", frame, tstamp=5000)
    assert (r.retval, r.action) == (0, "TC_ACT_OK")
    assert r.tstamp == 6000 and r.priority == 0x10020 and r.ctx.mark == 42
    assert r.data[:len(frame)] == frame
    assert tc.test_run(prog, "tc_drop", frame).action == "TC_ACT_SHOT"
    assert ct.sizeof(tc.SkBuff) == 192


@needs_root
def test_socket_filter_sees_only_what_it_keeps_and_unloads():
    from ebpf_tutor import Program, flows, net, tc
    src = SRC.replace("int sf_none(struct __sk_buff *skb) { return 0; }",
                      "int sf_all(struct __sk_buff *skb) { return -1; }")
    with net.VethPair() as lab:
        with Program(src, name="test_sf") as p:
            with tc.attach_socket_filter(p, "sf_all", lab.ns["b"], lab.ifname["b"]) as raw:
                prog_id = tc.prog_id(p.funcs[b"sf_all"].fd)
                flows.udp_send(lab.ns["a"], lab.ip_b, 7000, 3)
                time.sleep(0.1)
                assert len([f for f in tc.drain(raw) if len(f) > 40 and f[23] == 17]) >= 3
            assert raw.fileno() == -1
            assert p.funcs[b"sf_all"].sock is None       # the helper took ownership
        deadline = time.monotonic() + 3
        while bpftool_knows(prog_id) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not bpftool_knows(prog_id)


SPLICE = r"""
#include <uapi/linux/bpf.h>
BPF_SOCKHASH(peers, u32, 2);
int splice(struct sk_msg_md *msg) {
    u32 peer = msg->local_port == PORT ? 0 : 1;
    return peers.msg_redirect_hash(msg, &peer, BPF_F_INGRESS);
}
"""


@needs_root
def test_sockmap_redirect_bypasses_loopback():
    from ebpf_tutor import Program, flows, net, tc
    port = 7311
    with net.VethPair() as lab, Program(SPLICE.replace("PORT", str(port))) as p:
        ns = lab.ns["a"]
        server = flows.socket_in(ns, socket.AF_INET, socket.SOCK_STREAM)
        server.bind(("127.0.0.1", port))
        server.listen(1)
        client = flows.socket_in(ns, socket.AF_INET, socket.SOCK_STREAM)
        client.connect(("127.0.0.1", port))
        accepted, _ = server.accept()
        try:
            with tc.sock_map_program(p, "splice", "peers"):
                tc.sock_map_set(p, "peers", 0, client)
                tc.sock_map_set(p, "peers", 1, accepted)
                lo = flows.link_counters(ns, "lo")["tx_bytes"]
                client.sendall(b"q" * 100_000)
                accepted.settimeout(2)
                got = 0
                while got < 100_000:
                    got += len(accepted.recv(1 << 20))
                accepted.sendall(b"back")
                client.settimeout(2)
                assert client.recv(10) == b"back"
                assert flows.link_counters(ns, "lo")["tx_bytes"] - lo < 10_000
            with pytest.raises(KeyError):
                tc.map_fd(p, "nope")
        finally:
            for s in (client, accepted, server):
                s.close()


@needs_root
def test_flows_count_what_arrives():
    from ebpf_tutor import flows, net
    with net.VethPair() as lab:
        d = flows.udp_flow(lab, 9000, 0.2, size=500)
        assert d.sent_packets > 10 and d.delivered_packets >= d.sent_packets
        assert d.rate > 0 and d.delivered_bytes >= d.sent_bytes
        paced = flows.udp_flow(lab, 9000, 0.5, size=958, rate=100_000)
        assert 0.6 * 100_000 <= paced.offered_rate <= 1.2 * 100_000
        with flows.UdpSinks(lab.ns["b"], [7000, 7001]) as sinks:
            flows.udp_send(lab.ns["a"], lab.ip_b, 7000, 4)
            time.sleep(0.1)
            assert dict(sinks.counts()) == {7000: 4, 7001: 0}
        with flows.TcpListeners(lab.ns["b"], [8000]) as listeners:
            assert flows.tcp_connects(lab.ns["a"], lab.ip_b, 8000, 3) == 3
            assert flows.tcp_connects(lab.ns["a"], lab.ip_b, 8001, 2, timeout=0.3) == 0
            time.sleep(0.05)
            assert listeners.accepted()[8000] == 3
        with flows.UdpEcho(lab.ns["b"], [7100]):
            rtts = flows.udp_probes(lab.ns["a"], lab.ip_b, [7100, 7101], 20)
        assert flows.loss(rtts[7100]) == 0 and flows.loss(rtts[7101]) == 1
        assert 0 < flows.median_ms(rtts[7100]) < 50
