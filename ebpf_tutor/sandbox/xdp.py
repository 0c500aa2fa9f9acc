"""XDP programs on sandbox interfaces: attach, look, detach, and run on
crafted packets.

    with VethPair(quiet=True) as lab, Program(SRC) as prog, \\
            xdp.attach(prog, "xdp_count", *lab.where("b"), mode="native") as att:
        ...                      # att.mode == "native", att.prog_id == bpftool's id
    # detached here, on success, error or Ctrl-C

Only interfaces that a sandbox of this process created are accepted
(`net.guard`); anything else needs `allow_foreign=True`, said out loud.

`test_run` runs a loaded XDP program on one packet, in the kernel, with no
network at all (BPF_PROG_TEST_RUN). `flood` uses the same machinery in its
"live frames" mode as a packet generator: a generator program redirects
each frame to an interface, which is how we measure drop rates here.
"""
from __future__ import annotations

import ctypes as ct
import errno
import socket
from dataclasses import dataclass

from . import net
from ..bpfsys.libbpf import TestRunOpts, libbpf
from ..bpfsys.programs import prog_id
from ..errors import AttachError

XDP_FLAGS_UPDATE_IF_NOEXIST, XDP_FLAGS_SKB_MODE, XDP_FLAGS_DRV_MODE = 1, 2, 4
MODES = {"native": XDP_FLAGS_DRV_MODE, "generic": XDP_FLAGS_SKB_MODE}
ATTACHED_AS = {"native": "xdp", "generic": "xdpgeneric"}   # IFLA_XDP_ATTACHED, as pyroute2 names it
ACTIONS = {0: "XDP_ABORTED", 1: "XDP_DROP", 2: "XDP_PASS", 3: "XDP_TX", 4: "XDP_REDIRECT"}


def load(prog, fn_name: str):
    """prog.load_func(fn_name, XDP): BCC loads a function once and caches it."""
    from ..kernel.bcc_import import BPF
    return prog.load_func(fn_name, BPF.XDP)


def _set(ns_name: str, ifname: str, fd: int, flags: int) -> dict:
    with net.open_ns(ns_name) as n:
        idx = n.link_lookup(ifname=ifname)[0]
        n.link("set", index=idx, xdp={"attrs": [("IFLA_XDP_FD", fd), ("IFLA_XDP_FLAGS", flags)]})
        return _state(n, idx)


def _state(n, idx: int) -> dict:
    xdp = n.get_links(index=idx)[0].get_attr("IFLA_XDP")
    attrs = dict(xdp["attrs"]) if xdp else {}
    return {"attached": attrs.get("IFLA_XDP_ATTACHED"), "prog_id": attrs.get("IFLA_XDP_PROG_ID")}


def state(ns_name: str, ifname: str) -> dict:
    """What XDP program is on an interface now: {'mode': 'native' | 'generic' |
    None, 'prog_id': int | None}, read back from the kernel."""

    def read() -> dict:
        with net.open_ns(ns_name) as n:
            return _state(n, n.link_lookup(ifname=ifname)[0])
    st = net.netlink(read)
    mode = {v: k for k, v in ATTACHED_AS.items()}.get(st["attached"])
    return {"mode": mode, "prog_id": st["prog_id"]}


@dataclass
class XdpAttachment:
    """One XDP program on one interface. Detach with `detach()` or `with`."""

    ns_name: str
    ifname: str
    mode: str
    prog_id: int
    fn_name: str
    attached: bool = True

    def detach(self) -> None:
        """Remove the program from the interface (once; quiet if the
        interface is already gone)."""
        if not self.attached:
            return
        self.attached = False
        try:
            net.netlink(_set, self.ns_name, self.ifname, -1, MODES[self.mode])
        except Exception:  # noqa: BLE001 - the sandbox was removed first: nothing is left
            pass

    def __enter__(self) -> "XdpAttachment":
        return self

    def __exit__(self, *exc) -> None:
        self.detach()

    def __repr__(self) -> str:
        state_ = "attached" if self.attached else "detached"
        return f"<XDP {self.fn_name} on {self.ifname} ({self.mode}, prog id {self.prog_id}): {state_}>"


def attach(prog, fn_name: str, ns_name: str, ifname: str, mode: str = "native",
           allow_foreign: bool = False) -> XdpAttachment:
    """Load `fn_name` of `prog` as XDP and attach it to `ifname` in namespace
    `ns_name`, in "native" (driver) or "generic" (skb) mode. Refuses an
    interface no sandbox of ours created, unless `allow_foreign=True`.
    The attachment is read back from the kernel: mode and program id."""
    if mode not in MODES:
        raise ValueError(f"mode is 'native' or 'generic', not {mode!r}")
    net.guard(ns_name, ifname, allow_foreign)
    fn = load(prog, fn_name)
    want = prog_id(fn.fd)
    try:
        st = net.netlink(_set, ns_name, ifname, fn.fd, MODES[mode] | XDP_FLAGS_UPDATE_IF_NOEXIST)
    except Exception as e:  # noqa: BLE001 - pyroute2's NetlinkError, made readable
        raise _attach_error(e, fn_name, ifname, mode) from None
    att = XdpAttachment(ns_name, ifname, mode, want, fn_name)
    if st["attached"] != ATTACHED_AS[mode] or st["prog_id"] != want:
        att.detach()
        raise AttachError(f"{fn_name} was not found on {ifname} in {mode} mode after attaching "
                          f"(the kernel reports {st})")
    return att


def _attach_error(e: Exception, fn_name: str, ifname: str, mode: str) -> AttachError:
    code = getattr(e, "code", None)
    msg = f"attaching {fn_name} to {ifname} in {mode} mode failed: {e}"
    hints = {
        errno.EBUSY: "another XDP program is already on this interface: detach it first "
                     "(leave its `with` block)",
        errno.EEXIST: "an XDP program is already attached in the other mode; one interface "
                      "has at most one XDP program: detach it first",
        errno.EOPNOTSUPP: "this driver has no native XDP: use mode='generic'",
        errno.EINVAL: "is the function an XDP program (int fn(struct xdp_md *ctx))?",
    }
    return AttachError(msg, errno=code, hint=hints.get(code, ""))


def devmap_add(table, ns_name: str, ifname: str, key: int | None = None) -> int:
    """Put an interface into a devmap (`BPF_DEVMAP`) at `key` (default: its
    ifindex); returns the ifindex.

    The kernel resolves a devmap's ifindex in the network namespace of the
    process that *writes* the entry. Written from the host namespace, index 2
    would be the host's own network card, whatever the program meant. So the
    update runs inside `ns_name`, and only for interfaces we created."""
    net.guard(ns_name, ifname)

    def update() -> int:
        with net.inside(ns_name):
            idx = socket.if_nametoindex(ifname)
            table[table.Key(idx if key is None else key)] = table.Leaf(idx)
        return idx
    return net.netlink(update)


# ------------------------------------------------- BPF_PROG_TEST_RUN -----
BPF_F_TEST_XDP_LIVE_FRAMES = 1 << 1


@dataclass
class TestRun:
    """What one BPF_PROG_TEST_RUN returned."""
    __test__ = False      # not a pytest test class, despite the name
    retval: int
    data_out: bytes
    ns_per_run: int

    @property
    def action(self) -> str:
        return ACTIONS.get(self.retval, str(self.retval))


def test_run(prog, fn_name: str, packet: bytes, repeat: int = 1) -> TestRun:
    """Run an XDP function on `packet` in the kernel, `repeat` times, without
    any interface: its verdict, the packet as it left, and ns per run."""
    fd = load(prog, fn_name).fd
    data = ct.create_string_buffer(packet, len(packet))
    out = ct.create_string_buffer(len(packet) + 512)
    opts = TestRunOpts(sz=ct.sizeof(TestRunOpts), data_in=ct.addressof(data),
                        data_size_in=len(packet), data_out=ct.addressof(out),
                        data_size_out=len(out), repeat=repeat)
    if libbpf().bpf_prog_test_run_opts(fd, ct.byref(opts)) != 0:
        code = ct.get_errno()
        raise OSError(code, f"BPF_PROG_TEST_RUN failed: {errno.errorcode.get(code, code)}")
    return TestRun(opts.retval, out.raw[:opts.data_size_out], opts.duration)


test_run.__test__ = False  # type: ignore[attr-defined]  # pytest: not a test


GENERATOR_SRC = "int xdp_gen(struct xdp_md *ctx) { return bpf_redirect(IFINDEX, 0); }"


def flood(ns_name: str, ifname: str, frame: bytes, count: int, batch: int = 64) -> float:
    """Transmit `frame` `count` times on `ifname` from inside the kernel: BPF_PROG_TEST_RUN
    in live-frames mode runs a one-line generator program (XDP_REDIRECT to
    `ifname`) on each copy. The frames arrive at the peer of `ifname` like
    any received traffic. Returns the seconds it took."""
    import time

    from ..program import Program
    net.guard(ns_name, ifname)
    ifindex = net.netlink(_ifindex, ns_name, ifname)
    with Program(GENERATOR_SRC.replace("IFINDEX", str(ifindex)), name="xdp flood") as gen:
        fd = load(gen, "xdp_gen").fd
        data = ct.create_string_buffer(frame, len(frame))
        opts = TestRunOpts(sz=ct.sizeof(TestRunOpts), data_in=ct.addressof(data),
                            data_size_in=len(frame), repeat=count,
                            flags=BPF_F_TEST_XDP_LIVE_FRAMES, batch_size=batch)

        def run() -> float:
            # the redirect target is looked up in the caller's namespace: enter it
            with net.inside(ns_name):
                t = time.perf_counter()
                rc = libbpf().bpf_prog_test_run_opts(fd, ct.byref(opts))
                took = time.perf_counter() - t
            if rc != 0:
                code = ct.get_errno()
                raise OSError(code, f"live-frames test run failed: {errno.errorcode.get(code, code)}")
            return took
        return net.netlink(run)


def _ifindex(ns_name: str, ifname: str) -> int:
    with net.open_ns(ns_name) as n:
        return n.link_lookup(ifname=ifname)[0]
