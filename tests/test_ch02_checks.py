"""The pieces chapter 2's checks stand on: a silent lab network (2.2 counts
every frame, so nothing but the check may send one), log2 slots as BCC files
them, and workloads that do exactly what they claim."""
from __future__ import annotations

import socket
import subprocess
import time

from tests.conftest import needs_root

COUNT_ALL = r"""
BPF_ARRAY(frames, u64, 1);
BPF_HISTOGRAM(sizes);
int count_all(struct __sk_buff *skb) {
    frames.increment(0);
    sizes.increment(bpf_log2l(skb->len));
    return 0;
}
"""


def test_slots_match_log2_hist_df_ranges():
    from ebpf_tutor.labs.checks.ch02 import _slot
    from ebpf_tutor.data import log2_counts_df
    df = log2_counts_df({}, slots=12)
    for n in [1, 2, 3, 60, 63, 64, 127, 128, 300, 1000, 1514]:
        row = df[df["slot"] == _slot(n)].iloc[0]
        assert row["low"] <= n < row["high"]


def test_hints_name_the_likely_mistake():
    from ebpf_tutor.labs.checks.ch02 import _hint_21, _hint_22
    want = {6: 2, 7: 3}
    assert "one slot off" in _hint_22({7: 2, 8: 3}, want)
    assert "not the length" in _hint_22({6: 120, 7: 200}, want)
    assert "calls, not bytes" in _hint_21(10, 5)
    assert "only write()" in _hint_21(40, 5)


@needs_root
def test_quiet_link_carries_only_what_we_send():
    """After quiet_link, a socket filter on veth-b sees nothing for a while,
    then exactly the datagrams sent, with the frame sizes the check assumes."""
    from bcc import BPF

    from ebpf_tutor import Program, log2_hist_df
    from ebpf_tutor.labs.checks.ch02 import ETH_IP_UDP, UDP_PORT, _slot, close_raw_sockets, quiet_link
    from ebpf_tutor.sandbox.net import VethPair, inside
    with VethPair() as pair, Program(COUNT_ALL) as prog:
        quiet_link(pair)
        fn = prog.load_func("count_all", BPF.SOCKET_FILTER)
        with inside(pair.ns["b"]):
            BPF.attach_raw_socket(fn, pair.ifname["b"])
            rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        with inside(pair.ns["a"]):
            tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            with rx, tx:
                rx.bind((pair.ip_b, UDP_PORT))
                time.sleep(1.5)
                assert prog["frames"][0].value == 0, "the lab network is not silent"
                for size in (60, 64, 1514):
                    tx.sendto(bytes(size - ETH_IP_UDP), (pair.ip_b, UDP_PORT))
                    rx.settimeout(2)
                    rx.recv(2048)
                time.sleep(0.2)
                hist = log2_hist_df(prog["sizes"])
        finally:
            close_raw_sockets(prog)
        assert prog["frames"][0].value == 3
    got = {int(s): int(c) for s, c in zip(hist["slot"], hist["count"]) if c}
    assert got == {_slot(60): 1, _slot(64): 1, _slot(1514): 1}


@needs_root
def test_writer_workload_makes_exactly_its_writes(tmp_path):
    """The 2.1 workload calls write() exactly N times: once in the main thread
    before any other starts, then (N - 1) / threads per thread (with "pin",
    each thread on its own CPU). A launcher waits for a line before exec'ing
    it (exec keeps the pid), so that a BPF program keyed by thread can be
    loaded first."""
    from ebpf_tutor import Program
    from ebpf_tutor.labs.checks.ch02 import WRITER_C, compile_c
    binary = compile_c(WRITER_C, tmp_path / "ebtwriter", "-pthread")
    launcher = tmp_path / "ebtlaunch.sh"
    launcher.write_text(f'#!/bin/sh\nread go\nexec {binary} "$@"\n')
    launcher.chmod(0o755)
    by_thread = r"""
    BPF_HASH(by_thread, u32, u64);
    TRACEPOINT_PROBE(syscalls, sys_enter_write) {
        if ((bpf_get_current_pid_tgid() >> 32) != TARGET) return 0;
        u32 tid = bpf_get_current_pid_tgid();
        by_thread.increment(tid);
        return 0;
    }
    """
    for writes, threads, extra in [(7, 1, []), (21, 2, []), (2001, 2, ["pin"])]:
        child = subprocess.Popen([str(launcher), str(writes), str(threads), *extra],
                                 stdin=subprocess.PIPE, stdout=subprocess.DEVNULL)
        with Program(by_thread, cflags=[f"-DTARGET={child.pid}"]) as prog:
            child.communicate(b"go\n", timeout=10)
            per_thread = sorted(v.value for v in prog["by_thread"].values())
        assert child.returncode == 0
        each = (writes - 1) // threads
        assert per_thread == sorted([each] * (threads - 1) + [each + 1])


@needs_root
def test_stack_target_has_its_function(tmp_path):
    """The 2.3 target exports its fresh function name in its symbol table."""
    from ebpf_tutor.labs.checks.ch02 import TARGET_C, compile_c
    binary = compile_c(TARGET_C.replace("SPIN", "ebt_spin_test").replace("DECOY", "ebt_decoy_test"),
                       tmp_path / "target")
    symbols = subprocess.run(["nm", str(binary)], capture_output=True, text=True).stdout
    assert " T ebt_spin_test" in symbols and " T ebt_decoy_test" in symbols
    p = subprocess.Popen([str(binary), "spin", "0.05"])
    try:
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            state = open(f"/proc/{p.pid}/stat").read().rsplit(")", 1)[1].split()[0]
            if state == "S":
                break
            time.sleep(0.02)
        assert state == "S", "the target should sleep after burning"
    finally:
        p.kill()
        p.wait()
