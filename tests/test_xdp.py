"""XDP on sandbox interfaces: both modes, read back, refused elsewhere,
always detached; test runs and the live-frames flood."""
import subprocess

import pytest

from tests.conftest import needs_root

SRC = r"""
BPF_ARRAY(seen, u64, 1);
int xdp_count(struct xdp_md *ctx) { seen.increment(0); return XDP_PASS; }
int xdp_drop(struct xdp_md *ctx) { seen.increment(0); return XDP_DROP; }
int xdp_swap(struct xdp_md *ctx) {
    void *data = (void *)(long)ctx->data, *end = (void *)(long)ctx->data_end;
    unsigned char *eth = data, tmp[6];
    if (data + 14 > end) return XDP_ABORTED;
    __builtin_memcpy(tmp, eth, 6);
    __builtin_memcpy(eth, eth + 6, 6);
    __builtin_memcpy(eth + 6, tmp, 6);
    return XDP_TX;
}
"""


@pytest.fixture
def prog():
    from ebpf_tutor import Program
    with Program(SRC, name="test_xdp") as p:
        yield p


def bpftool_knows(prog_id: int) -> bool:
    return subprocess.run(["bpftool", "prog", "show", "id", str(prog_id)],
                          capture_output=True).returncode == 0


@needs_root
@pytest.mark.parametrize("mode", ["native", "generic"])
def test_attach_reads_back_mode_and_id_then_detaches(prog, mode):
    from ebpf_tutor import net, traffic, xdp
    with net.VethPair(quiet=True) as lab:
        with xdp.attach(prog, "xdp_count", *lab.where("b"), mode=mode) as att:
            assert att.mode == mode and att.prog_id == xdp.prog_id(xdp.load(prog, "xdp_count").fd)
            assert xdp.state(*lab.where("b")) == {"mode": mode, "prog_id": att.prog_id}
            shown = lab.run_in("b", ["ip", "link", "show", "veth-b"]).stdout
            assert (" xdpgeneric " if mode == "generic" else " xdp ") in shown
            assert traffic.ping(lab, "a", lab.ip_b, count=3).received == 3
        assert xdp.state(*lab.where("b")) == {"mode": None, "prog_id": None}
        assert prog["seen"][0].value == 3


@needs_root
def test_refuses_the_host_interfaces(prog):
    from ebpf_tutor import net, xdp
    for ifname in ["lo", net.uplink() or "eth0"]:
        with pytest.raises(net.NotOurInterface):
            xdp.attach(prog, "xdp_drop", None, ifname)
    with pytest.raises(net.NotOurInterface):
        xdp.devmap_add(None, None, "lo")


@needs_root
def test_one_program_per_interface_with_a_hint(prog):
    from ebpf_tutor import net, xdp
    from ebpf_tutor.errors import AttachError
    with net.VethPair() as lab, xdp.attach(prog, "xdp_count", *lab.where("b")):
        with pytest.raises(AttachError, match="detach it first"):
            xdp.attach(prog, "xdp_drop", *lab.where("b"))
        with pytest.raises(AttachError, match="other mode"):
            xdp.attach(prog, "xdp_drop", *lab.where("b"), mode="generic")


@needs_root
def test_drop_really_drops_and_ctrl_c_detaches(prog):
    from ebpf_tutor import net, traffic, xdp
    with net.VethPair(quiet=True) as lab:
        with pytest.raises(KeyboardInterrupt):
            with xdp.attach(prog, "xdp_drop", *lab.where("b")):
                assert traffic.ping(lab, "a", lab.ip_b, count=2, wait=0.5).received == 0
                raise KeyboardInterrupt
        assert xdp.state(*lab.where("b"))["mode"] is None
        assert traffic.ping(lab, "a", lab.ip_b, count=2).received == 2


@needs_root
def test_closing_the_sandbox_releases_a_forgotten_attachment():
    from ebpf_tutor import Program, net, xdp
    with Program(SRC) as p:
        lab = net.VethPair().__enter__()
        att = xdp.attach(p, "xdp_count", *lab.where("b"))   # never detached by hand
        lab.close()
    assert not bpftool_knows(att.prog_id)
    att.detach()                                           # harmless afterwards


@needs_root
def test_test_run_gives_verdict_and_output(prog):
    from ebpf_tutor import traffic, xdp
    frame = traffic.udp_frame("02:00:00:00:00:01", "02:00:00:00:00:02", "10.0.0.1", "10.0.0.2", 1, 2)
    run = xdp.test_run(prog, "xdp_swap", frame)
    assert run.action == "XDP_TX"
    assert run.data_out == frame[6:12] + frame[0:6] + frame[12:]
    with pytest.raises(OSError, match="EINVAL"):      # shorter than an Ethernet header
        xdp.test_run(prog, "xdp_swap", frame[:10])


@needs_root
def test_flood_delivers_exactly_count_frames(prog):
    from ebpf_tutor import net, traffic, xdp
    with net.VethPair(quiet=True, xdp_ready=True) as lab, \
            xdp.attach(prog, "xdp_drop", *lab.where("b")):
        frame = traffic.udp_frame(lab.mac("a"), lab.mac("b"), lab.ip_a, lab.ip_b, 1, 9)
        seconds = xdp.flood(*lab.where("a"), frame, 20_000)
        assert seconds > 0
        assert prog["seen"][0].value == 20_000


@needs_root
def test_devmap_entries_are_written_inside_the_namespace():
    from ebpf_tutor import Program, net, xdp
    with net.Star(["left", "right"]) as lan, Program("BPF_DEVMAP(tx, 64);") as p:
        idx = xdp.devmap_add(p["tx"], *lan.where("hub", "to-right"))
        assert idx == lan.ifindex("hub", "to-right")
        assert p["tx"][p["tx"].Key(idx)].value == idx
