"""Chapter 16's analyzer (ebpf_tutor/apps/netflow): the flow table against
traffic of known shape, detection, the pcap writer read back by tshark, and
the command line (`python -m ebpf_tutor netflow ... --json`)."""
import json
import shutil
import subprocess
import sys
import time

import pytest

from tests.conftest import ROOT, interruptible, needs_root

from ebpf_tutor.apps.netflow import pcap, records, report
from ebpf_tutor.sandbox import packets


def cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ebpf_tutor", "netflow", *args],
                          capture_output=True, text=True, timeout=timeout, cwd=ROOT)


# ------------------------------------------------------------ no kernel --
def test_pcap_round_trip(tmp_path):
    frames = [packets.udp_packet(dport=53, payload=b"x" * n) for n in (0, 10, 300)]
    with pcap.PcapWriter(tmp_path / "a.pcap", snap_len=64) as w:
        for i, f in enumerate(frames):
            w.write(f, len(f), ts_ns=1_700_000_000_123_456_789 + i)
    back = list(pcap.read(tmp_path / "a.pcap"))
    assert [(o, d) for _, o, d in back] == [(len(f), f[:64]) for f in frames]
    assert back[0][0] == 1_700_000_000_123_456_789


@pytest.mark.skipif(not shutil.which("tshark"), reason="tshark is not installed")
def test_tshark_reads_our_pcap(tmp_path):
    frames = [packets.tcp_packet(dport=80 + i, flags="S") for i in range(3)]
    with pcap.PcapWriter(tmp_path / "b.pcap") as w:
        for f in frames:
            w.write(f, len(f), ts_ns=1_700_000_000_000_000_000)
    out = subprocess.run(["tshark", "-n", "-r", str(tmp_path / "b.pcap"), "-T", "fields",
                          "-e", "frame.len", "-e", "tcp.dstport", "-e", "frame.time_epoch"],
                         capture_output=True, text=True, check=True).stdout.split("\n")
    rows = [ln.split("\t") for ln in out if ln]
    assert [(int(a), int(b)) for a, b, _ in rows] == [(len(f), 80 + i) for i, f in enumerate(frames)]
    assert rows[0][2].startswith("1700000000.000000000")


def test_top_talkers_and_shares():
    flows = [records.Flow("10.0.0.1", "10.0.0.2", 1, 2, "tcp", 3, 300),
             records.Flow("10.0.0.2", "10.0.0.1", 2, 1, "tcp", 1, 100),
             records.Flow("10.0.0.3", "10.0.0.2", 5, 6, "udp", 1, 1000)]
    top = records.top_talkers(flows, 2)
    assert [t.address for t in top] == ["10.0.0.2", "10.0.0.3"]
    assert top[0].received_bytes == 1300 and top[0].sent_bytes == 100
    sh = records.shares({"tcp": [4, 400], "udp": [1, 1000]})
    assert sh[0].protocol == "udp" and sh[0].byte_share == pytest.approx(1000 / 1400)
    assert "10.0.0.3:5" in report.flow_table(flows)


def test_help_is_fast_and_names_the_options():
    t = time.perf_counter()
    r = cli("--help")
    assert r.returncode == 0
    for opt in ("--netns", "--dev", "--hook", "--json", "--pcap", "--scan-ports"):
        assert opt in r.stdout
    assert time.perf_counter() - t < 5


def test_refuses_the_host_namespace():
    r = cli("--dev", "lo")
    assert r.returncode == 2 and "--netns" in r.stderr
    r = cli("--netns", "no-such-namespace-ebt", "--dev", "lo")
    assert r.returncode == 2 and "no network namespace" in r.stderr


@needs_root
def test_refuses_a_name_for_the_host_namespace():
    """`ip netns attach NAME PID` names the namespace this test runs in (the
    host's): the command must see through the name."""
    import os
    name = f"ebt-{os.getpid()}-hostalias"
    subprocess.run(["ip", "netns", "attach", name, str(os.getpid())], check=True)
    try:
        r = cli("--netns", name, "--dev", "lo")
    finally:
        subprocess.run(["ip", "netns", "delete", name], check=True)
    assert r.returncode == 2 and "host's network namespace" in r.stderr


# ------------------------------------------------------------ the kernel --
@needs_root
@pytest.mark.parametrize("hook", ["xdp", "tc"])
def test_flow_table_counts_known_flows(hook):
    from ebpf_tutor.apps.netflow import workload
    from ebpf_tutor.apps.netflow.flowtable import Analyzer, Options
    from ebpf_tutor.sandbox import net
    with net.VethPair(quiet=True) as lab, Analyzer(Options(hook=hook)) as nf:
        nf.attach(*lab.where("b"))
        sport = workload.udp_datagrams(lab.ns["a"], lab.ip_b, 6000, [10, 200, 1000])
        frames = [packets.tcp_packet(dport=7000, sport=5000 + i, src=lab.ip_a, dst=lab.ip_b)
                  for i in range(4)]
        from ebpf_tutor.sandbox import traffic
        traffic.send_frames(lab.ns["a"], lab.ifname["a"], frames)
        time.sleep(0.05)
        flows = {f.key: f for f in nf.flows()}
        shares = {p.protocol: p for p in nf.protocols()}
    udp = flows[(lab.ip_a, lab.ip_b, sport, 6000, "udp")]
    assert (udp.packets, udp.bytes) == (3, sum(42 + n for n in (10, 200, 1000)))
    for i in range(4):
        syn = flows[(lab.ip_a, lab.ip_b, 5000 + i, 7000, "tcp")]
        assert (syn.packets, syn.bytes, syn.tcp_flags) == (1, 54, "S")
    assert shares["tcp"].packets >= 4 and shares["udp"].packets >= 3


@needs_root
def test_scan_and_flood_are_flagged_benign_is_not():
    from ebpf_tutor.apps.netflow import workload
    from ebpf_tutor.apps.netflow.flowtable import Analyzer, Options
    from ebpf_tutor.sandbox import net
    opts = Options(hook="xdp", scan_ports=15, flood_packets=800, window=2.0)
    with net.VethPair(quiet=True) as lab, Analyzer(opts) as nf:
        nf.attach(*lab.where("b"))
        workload.udp_flood(lab, 300, port=6000)             # a burst, under the flood bar
        workload.syn_scan(lab, list(range(2000, 2010)))     # 10 ports: under the scan bar
        nf.poll(50)
        assert nf.alerts == []
        workload.syn_scan(lab, list(range(3000, 3010)))     # 20 distinct ports now
        workload.udp_flood(lab, 600, port=6001)             # 900 packets in the window
        nf.poll(100)
    kinds = sorted((a.kind, a.value) for a in nf.alerts)
    assert kinds == [("flood", 800), ("scan", 15)], kinds


@needs_root
def test_cli_demo_json():
    r = cli("--demo", "--json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert {a["kind"] for a in doc["alerts"]} == {"scan", "flood"}
    assert doc["flows"] and doc["protocols"][0]["protocol"] == "udp"


@needs_root
def test_cli_on_a_given_namespace_with_pcap(tmp_path):
    """The command runs in its own process, on a namespace this test made,
    until its duration ends; the pcap it writes is read back."""
    from ebpf_tutor.apps.netflow import workload
    from ebpf_tutor.sandbox import net
    out = tmp_path / "s.pcap"
    with net.VethPair(quiet=True) as lab:
        proc = subprocess.Popen([sys.executable, "-m", "ebpf_tutor", "netflow", "--netns",
                                 lab.ns["b"], "--dev", lab.ifname["b"], "--hook", "tc",
                                 "--duration", "4", "--json", "--pcap", str(out),
                                 "--sample-rate", "2"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
        deadline = time.monotonic() + 20
        from ebpf_tutor.sandbox import tc
        while not tc.filters(*lab.where("b")) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(tc.filters(*lab.where("b"))) == 2
        workload.udp_datagrams(lab.ns["a"], lab.ip_b, 6000, [100] * 10)
        stdout, stderr = proc.communicate(timeout=30)
        assert tc.filters(*lab.where("b")) == []            # detached on exit
    assert proc.returncode == 0, stderr
    doc = json.loads(stdout)
    udp = [f for f in doc["flows"] if f["dport"] == 6000]
    assert [(f["packets"], f["bytes"]) for f in udp] == [(10, 1420)]
    assert doc["pcap"]["packets"] >= 5
    assert len(list(pcap.read(out))) == doc["pcap"]["packets"]


@needs_root
def test_cli_ctrl_c_detaches_and_reports():
    import signal
    from ebpf_tutor.sandbox import net, xdp
    with net.VethPair(quiet=True) as lab, interruptible(
            [sys.executable, "-m", "ebpf_tutor", "netflow", "--netns", lab.ns["b"], "--dev",
             lab.ifname["b"], "--json"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT) as proc:
        deadline = time.monotonic() + 20
        while xdp.state(*lab.where("b"))["mode"] is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert xdp.state(*lab.where("b"))["mode"] == "native"
        proc.send_signal(signal.SIGINT)
        stdout, _ = proc.communicate(timeout=60)
        assert xdp.state(*lab.where("b"))["mode"] is None
    assert proc.returncode == 130
    assert json.loads(stdout)["interrupted"] is True


@needs_root
def test_cli_says_why_it_cannot_attach():
    """Another XDP program on the interface: one readable error, exit 1, no traceback."""
    from ebpf_tutor import Program
    from ebpf_tutor.sandbox import net, xdp
    with net.VethPair(quiet=True) as lab, \
            Program("int other(struct xdp_md *ctx) { return XDP_PASS; }") as other, \
            xdp.attach(other, "other", *lab.where("b")):
        r = cli("--netns", lab.ns["b"], "--dev", lab.ifname["b"], "--duration", "1")
    assert r.returncode == 1
    assert "already on this interface" in r.stderr and "Traceback" not in r.stderr
