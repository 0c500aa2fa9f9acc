"""TC programs on sandbox interfaces, the qdiscs around them, and the
socket-level hooks of chapter 8 (socket filters, SOCKMAP).

    with VethPair() as lab, Program(SRC) as prog, \\
            tc.attach(prog, "tc_count", lab.ns["a"], lab.ifname["a"], "egress") as f:
        ...                     # f.prio, f.prog_id; tc.filters(...) reads it back
    # detached here, on success, error or Ctrl-C

A TC program is a *filter* of the `clsact` qdisc, in direct-action mode: its
return value is the verdict (TC_ACT_OK, TC_ACT_SHOT, TC_ACT_REDIRECT...).
`attach` adds the clsact qdisc if needed and removes it again when the last
filter it put there goes. A filter holds its own reference to the program:
closing the Program does not detach it, deleting the filter (or the
interface) does. Only interfaces a sandbox of this process created are
accepted (`net.guard`); anything else needs `allow_foreign=True`.

pyroute2 0.9 drives an asyncio loop under its blocking API, which fails in
Jupyter; every netlink call here runs through `net.netlink` on a thread of
its own.

Qdiscs: `available_qdiscs()` decides which qdisc kinds this kernel has by
adding each one to a throwaway veth; `root_qdisc(...)` installs tbf or htb
(with classes) for a `with` block. `test_run` runs a TC program on one
crafted packet (BPF_PROG_TEST_RUN) and gives back the `__sk_buff` fields it
wrote (tstamp, priority, mark).
"""
from __future__ import annotations

import contextlib
import ctypes as ct
import errno
import itertools
import os
import socket
import struct
from dataclasses import dataclass, field
from typing import Iterator

from pyroute2 import NetNS

from .. import bpfsys
from ..bpfsys.programs import prog_id
from . import net
from ..errors import AttachError

INGRESS, EGRESS = "ingress", "egress"
PARENTS = {INGRESS: "ffff:fff2", EGRESS: "ffff:fff3"}      # clsact's two hooks
TC_ACT = {-1: "TC_ACT_UNSPEC", 0: "TC_ACT_OK", 1: "TC_ACT_RECLASSIFY", 2: "TC_ACT_SHOT",
          3: "TC_ACT_PIPE", 4: "TC_ACT_STOLEN", 7: "TC_ACT_REDIRECT"}
TC_ACT_OK, TC_ACT_SHOT, TC_ACT_REDIRECT = 0, 2, 7

_prios = itertools.count(1)
_our_clsact: set[tuple[str, str]] = set()      # (netns, ifname) where we added clsact


def _index(n: NetNS, ifname: str) -> int:
    found = n.link_lookup(ifname=ifname)
    if not found:
        raise AttachError(f"no interface {ifname} in this namespace")
    return found[0]


def load(prog, fn_name: str):
    """prog.load_func(fn_name, SCHED_CLS): the verifier runs here."""
    from ..kernel.bcc_import import BPF
    return prog.load_func(fn_name, BPF.SCHED_CLS)




# ---------------------------------------------------------------- filters --
def _filters(n: NetNS, idx: int, direction: str) -> list[dict]:
    out = []
    for f in n.get_filters(index=idx, parent=PARENTS[direction]):
        opts = f.get_attr("TCA_OPTIONS")
        if not f["handle"] or opts is None:     # the per-priority header entry
            continue
        flags = opts.get_attr("TCA_BPF_FLAGS") or 0
        out.append({"direction": direction, "prio": f["info"] >> 16,
                    "name": opts.get_attr("TCA_BPF_NAME"), "direct_action": bool(flags & 1)})
    return out


def filters(ns_name: str, ifname: str, direction: str | None = None) -> list[dict]:
    """The BPF filters on an interface, read back from the kernel:
    [{'direction', 'prio', 'name', 'direct_action'}]."""
    def read() -> list[dict]:
        with net.open_ns(ns_name) as n:
            idx = _index(n, ifname)
            if not any(q.get_attr("TCA_KIND") == "clsact" for q in n.get_qdiscs(index=idx)):
                return []
            dirs = [direction] if direction else [INGRESS, EGRESS]
            return [f for d in dirs for f in _filters(n, idx, d)]
    return net.netlink(read)


@dataclass
class TcFilter:
    """One BPF program as a direct-action filter on one clsact hook."""

    ns_name: str
    ifname: str
    direction: str
    fn_name: str
    prio: int
    prog_id: int
    attached: bool = True

    def detach(self) -> None:
        """Delete this filter; delete the clsact qdisc too if we added it and
        nothing else is left on it. Quiet if the interface is already gone."""
        if not self.attached:
            return
        self.attached = False
        with contextlib.suppress(Exception):   # the sandbox went first: nothing is left
            net.netlink(_detach, self.ns_name, self.ifname, self.direction, self.prio)

    def __enter__(self) -> "TcFilter":
        return self

    def __exit__(self, *exc) -> None:
        self.detach()

    def __repr__(self) -> str:
        state = "attached" if self.attached else "detached"
        return (f"<TC {self.fn_name} on {self.ifname} {self.direction} (prio {self.prio}, "
                f"prog id {self.prog_id}): {state}>")


def _attach(ns_name: str, ifname: str, direction: str, fd: int, name: str, prio: int) -> list:
    with net.open_ns(ns_name) as n:
        idx = _index(n, ifname)
        if not any(q.get_attr("TCA_KIND") == "clsact" for q in n.get_qdiscs(index=idx)):
            n.tc("add", "clsact", idx)
            _our_clsact.add((ns_name, ifname))
        n.tc("add-filter", "bpf", idx, ":1", fd=fd, name=name, parent=PARENTS[direction],
             classid=1, direct_action=True, prio=prio)
        return _filters(n, idx, direction)


def _detach(ns_name: str, ifname: str, direction: str, prio: int) -> None:
    with net.open_ns(ns_name) as n:
        found = n.link_lookup(ifname=ifname)
        if not found:
            return
        idx = found[0]
        with contextlib.suppress(Exception):
            n.tc("del-filter", "bpf", idx, ":1", parent=PARENTS[direction], prio=prio)
        left = _filters(n, idx, INGRESS) + _filters(n, idx, EGRESS)
        if not left and (ns_name, ifname) in _our_clsact:
            n.tc("del", "clsact", idx)
            _our_clsact.discard((ns_name, ifname))


def attach(prog, fn_name: str, ns_name: str, ifname: str, direction: str = EGRESS, *,
           prio: int | None = None, allow_foreign: bool = False) -> TcFilter:
    """Load `fn_name` of `prog` as SCHED_CLS and attach it as a direct-action
    filter on the `direction` ("ingress" or "egress") hook of `ifname` in
    namespace `ns_name`. Refuses interfaces no sandbox of ours created unless
    `allow_foreign=True`. The filter is read back from the kernel."""
    if direction not in PARENTS:
        raise ValueError(f"direction is 'ingress' or 'egress', not {direction!r}")
    net.guard(ns_name, ifname, allow_foreign)
    fn = load(prog, fn_name)
    prio = prio or next(_prios)
    try:
        seen = net.netlink(_attach, ns_name, ifname, direction, fn.fd, fn_name, prio)
    except KeyboardInterrupt:
        # the netlink thread may still finish the attach: queue the detach behind it
        with contextlib.suppress(Exception):
            net.netlink(_detach, ns_name, ifname, direction, prio)
        raise
    except Exception as e:  # noqa: BLE001 - pyroute2's NetlinkError, made readable
        code = getattr(e, "code", None)
        hint = {errno.EEXIST: f"a filter with priority {prio} is already on this hook: "
                              "detach it first or pass another prio",
                errno.EINVAL: "is the function a TC program (int fn(struct __sk_buff *skb))?"}
        raise AttachError(f"attaching {fn_name} to {ifname} {direction} failed: {e}",
                          errno=code, hint=hint.get(code, "")) from None
    att = TcFilter(ns_name, ifname, direction, fn_name, prio, prog_id(fn.fd))
    if not any(f["prio"] == prio and f["name"] == fn_name and f["direct_action"] for f in seen):
        att.detach()
        raise AttachError(f"{fn_name} was not found on {ifname} {direction} after attaching "
                          f"(the kernel lists {seen})")
    return att


def clear(ns_name: str, ifname: str, allow_foreign: bool = False) -> None:
    """Remove the clsact qdisc (every TC filter with it) and the root qdisc
    from an interface of ours."""
    net.guard(ns_name, ifname, allow_foreign)

    def go() -> None:
        with net.open_ns(ns_name) as n:
            idx = _index(n, ifname)
            for q in n.get_qdiscs(index=idx):
                with contextlib.suppress(Exception):
                    if q.get_attr("TCA_KIND") == "clsact":
                        n.tc("del", "clsact", idx)
                    elif q["parent"] == 0xFFFFFFFF and q.get_attr("TCA_KIND") != "noqueue":
                        n.tc("del", index=idx, handle=q["handle"], parent=0xFFFFFFFF)
            _our_clsact.discard((ns_name, ifname))
    net.netlink(go)


# ----------------------------------------------------------------- qdiscs --
QDISC_KINDS = ("fq", "netem", "etf", "fq_codel", "tbf", "htb")
_PROBE_ARGS = {"tbf": {"rate": "100mbit", "burst": 32000, "latency": 50000},
               "netem": {"delay": 10000}, "htb": {"default": 0x10}}
_available: dict[str, bool] = {}


def _try_qdisc(ns_name: str, ifname: str, kind: str) -> bool:
    with net.open_ns(ns_name) as n:
        idx = _index(n, ifname)
        try:
            n.tc("add", kind, idx, handle=0x10000, **_PROBE_ARGS.get(kind, {}))
        except Exception as e:  # noqa: BLE001
            if getattr(e, "code", None) == errno.ENOENT:
                return False          # "Specified qdisc kind is unknown": not in this kernel
            return True               # known to the kernel, only these options were refused
        n.tc("del", index=idx, handle=0x10000, parent=0xFFFFFFFF)
        return True


def available_qdiscs(kinds: tuple[str, ...] = QDISC_KINDS) -> dict[str, bool]:
    """Which qdisc kinds this kernel has, decided by adding each one as the
    root qdisc of a throwaway veth (cached for the process)."""
    todo = [k for k in kinds if k not in _available]
    if todo:
        with net.VethPair() as lab:
            for kind in todo:
                _available[kind] = net.netlink(_try_qdisc, lab.ns["a"], lab.ifname["a"], kind)
    return {k: _available[k] for k in kinds}


def has_qdisc(kind: str) -> bool:
    return available_qdiscs((kind,))[kind]


@dataclass
class RootQdisc:
    """A root qdisc (handle 1:) we installed; `with` removes it."""

    ns_name: str
    ifname: str
    kind: str
    installed: bool = True

    def remove(self) -> None:
        if not self.installed:
            return
        self.installed = False

        def go() -> None:
            with net.open_ns(self.ns_name) as n:
                found = n.link_lookup(ifname=self.ifname)
                if found:
                    n.tc("del", index=found[0], handle=0x10000, parent=0xFFFFFFFF)
        with contextlib.suppress(Exception):
            net.netlink(go)

    def stats(self) -> list[dict]:
        return qdisc_stats(self.ns_name, self.ifname)

    def __enter__(self) -> "RootQdisc":
        return self

    def __exit__(self, *exc) -> None:
        self.remove()


def root_qdisc(ns_name: str, ifname: str, kind: str, *, classes: dict[int, str] | None = None,
               default: int = 0x10, allow_foreign: bool = False, **options) -> RootQdisc:
    """Install `kind` as the root qdisc (handle 1:) of an interface of ours.

        root_qdisc(ns, "veth-a", "tbf", rate="8mbit", burst=16000, latency=50000)
        root_qdisc(ns, "veth-a", "htb", classes={0x10: "1gbit", 0x20: "8mbit"})

    For htb, `classes` maps a minor number to a rate (class 1:minor, ceil =
    rate); unclassified packets go to 1:`default`. A TC program picks the
    class by setting skb->priority = 0x10000 | minor (that is, 1:minor)."""
    net.guard(ns_name, ifname, allow_foreign)
    if kind == "htb":
        options.setdefault("default", default)

    def go() -> None:
        with net.open_ns(ns_name) as n:
            idx = _index(n, ifname)
            n.tc("add", kind, idx, handle=0x10000, **options)
            for minor, rate in (classes or {}).items():
                n.tc("add-class", "htb", idx, 0x10000 | minor, parent=0x10000, rate=rate,
                     ceil=rate)
    try:
        net.netlink(go)
    except BaseException as e:  # noqa: BLE001 - Ctrl-C included: leave no half-built qdisc
        if getattr(e, "code", None) == errno.ENOENT:
            from ..errors import FeatureUnavailable
            raise FeatureUnavailable(f"this kernel has no {kind} qdisc",
                                     hint="see tc.available_qdiscs()") from None
        RootQdisc(ns_name, ifname, kind).remove()
        raise
    return RootQdisc(ns_name, ifname, kind)


def qdisc_stats(ns_name: str, ifname: str) -> list[dict]:
    """Counters of every qdisc and class on an interface: kind, handle,
    bytes, packets, drops, overlimits, backlog."""
    def read() -> list[dict]:
        with net.open_ns(ns_name) as n:
            idx = _index(n, ifname)
            rows = []
            for what, items in (("qdisc", n.get_qdiscs(index=idx)),
                                ("class", n.get_classes(index=idx))):
                for q in items:
                    st2 = q.get_attr("TCA_STATS2")
                    basic = (st2.get_attr("TCA_STATS_BASIC") if st2 else None) or {}
                    queue = (st2.get_attr("TCA_STATS_QUEUE") if st2 else None) or {}
                    h = q["handle"]
                    rows.append({"what": what, "kind": q.get_attr("TCA_KIND"),
                                 "handle": f"{h >> 16:x}:{h & 0xFFFF:x}",
                                 "bytes": basic.get("bytes", 0), "packets": basic.get("packets", 0),
                                 "drops": queue.get("drops", 0),
                                 "overlimits": queue.get("overlimits", 0),
                                 "backlog": queue.get("backlog", 0)})
            return rows
    return net.netlink(read)


# ---------------------------------------------------------- offloads -------
SIOCETHTOOL, ETHTOOL_STXCSUM = 0x8946, 0x17


def set_tx_checksum(ns_name: str, ifname: str, on: bool, allow_foreign: bool = False) -> None:
    """Turn TX checksum offload of a veth of ours on or off (`ethtool -K
    IF tx on|off`). With it off the stack computes every checksum before
    TC egress runs, so a program that rewrites a port must fix the checksum."""
    import array
    import fcntl
    net.guard(ns_name, ifname, allow_foreign)

    def go() -> None:
        with net.inside(ns_name):
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            buf = array.array("I", [ETHTOOL_STXCSUM, int(on)])
            fcntl.ioctl(s.fileno(), SIOCETHTOOL,
                        struct.pack("16sP", ifname.encode(), buf.buffer_info()[0]))
        finally:
            s.close()
    net.netlink(go)


# --------------------------------------------------------- test runs ------
class SkBuff(ct.Structure):
    """struct __sk_buff (uapi/linux/bpf.h), the context of TC and socket
    filter programs, up to hwtstamp. A test run accepts and returns a few of
    its fields (mark, priority, tstamp, ...); the rest must stay zero."""
    u32 = ct.c_uint32
    _fields_ = [("len", u32), ("pkt_type", u32), ("mark", u32), ("queue_mapping", u32),
                ("protocol", u32), ("vlan_present", u32), ("vlan_tci", u32),
                ("vlan_proto", u32), ("priority", u32), ("ingress_ifindex", u32),
                ("ifindex", u32), ("tc_index", u32), ("cb", u32 * 5), ("hash", u32),
                ("tc_classid", u32), ("data", u32), ("data_end", u32), ("napi_id", u32),
                ("family", u32), ("remote_ip4", u32), ("local_ip4", u32),
                ("remote_ip6", u32 * 4), ("local_ip6", u32 * 4), ("remote_port", u32),
                ("local_port", u32), ("data_meta", u32), ("flow_keys", ct.c_uint64),
                ("tstamp", ct.c_uint64), ("wire_len", u32), ("gso_segs", u32),
                ("sk", ct.c_uint64), ("gso_size", u32), ("tstamp_type", ct.c_uint8),
                ("_pad", ct.c_uint8 * 3), ("hwtstamp", ct.c_uint64)]


@dataclass
class TcRun:
    """What one BPF_PROG_TEST_RUN of a TC program gave back."""
    __test__ = False
    retval: int
    data: bytes
    ctx: SkBuff = field(repr=False)
    ns_per_run: int = 0

    @property
    def action(self) -> str:
        return TC_ACT.get(ct.c_int32(self.retval).value, str(self.retval))

    @property
    def tstamp(self) -> int:
        return self.ctx.tstamp

    @property
    def priority(self) -> int:
        return self.ctx.priority


def test_run(prog, fn_name: str, packet: bytes, *, tstamp: int = 0, mark: int = 0,
             priority: int = 0, repeat: int = 1) -> TcRun:
    """Run TC function `fn_name` on one Ethernet frame in the kernel, no
    interface involved, `repeat` times. `tstamp`, `mark` and `priority` go
    into its __sk_buff; the result holds the verdict, the frame as the
    program left it and the __sk_buff fields it wrote."""
    fd = load(prog, fn_name).fd
    ctx_in, ctx_out = SkBuff(tstamp=tstamp, mark=mark, priority=priority), SkBuff()
    data_in = ct.create_string_buffer(packet, len(packet))
    data_out = ct.create_string_buffer(len(packet) + 256)
    attr = bpfsys.TestRunAttr(prog_fd=fd, data_size_in=len(packet), data_in=ct.addressof(data_in),
                              data_size_out=len(data_out), data_out=ct.addressof(data_out),
                              repeat=repeat, ctx_size_in=ct.sizeof(SkBuff),
                              ctx_in=ct.addressof(ctx_in), ctx_size_out=ct.sizeof(SkBuff),
                              ctx_out=ct.addressof(ctx_out))
    try:
        bpfsys.bpf(bpfsys.Cmd.PROG_TEST_RUN, attr)
    except OSError as e:
        raise OSError(e.errno, f"BPF_PROG_TEST_RUN of {fn_name} failed: {os.strerror(e.errno)}") \
            from None
    return TcRun(attr.retval, data_out.raw[:attr.data_size_out], ctx_out, attr.duration)


test_run.__test__ = False  # type: ignore[attr-defined]  # pytest: not a test


# ------------------------------------------------- socket-level programs ---
class FilteredSocket(socket.socket):
    """The packet socket a socket filter is attached to: it receives only
    what the program accepts. Closing it detaches the filter."""


def attach_socket_filter(prog, fn_name: str, ns_name: str, ifname: str,
                         allow_foreign: bool = False) -> FilteredSocket:
    """Load `fn_name` as SOCKET_FILTER and attach it to a new packet socket
    bound to `ifname` inside namespace `ns_name` (BCC's attach_raw_socket,
    run in that namespace). The returned socket owns the descriptor: BCC
    never closes it, so close the socket (or use `with`)."""
    from ..kernel.bcc_import import BPF
    net.guard(ns_name, ifname, allow_foreign)
    fn = prog.load_func(fn_name, BPF.SOCKET_FILTER)

    def go() -> int:
        with net.inside(ns_name):
            BPF.attach_raw_socket(fn, ifname)
        return fn.sock
    s = FilteredSocket(socket.AF_PACKET, socket.SOCK_RAW, 0, fileno=net.netlink(go))
    fn.sock = None                 # the socket owns the fd now: Program.cleanup must not close it
    s.setblocking(False)
    drain(s)                       # frames queued between bind and attach were never filtered
    return s


def drain(sock: socket.socket, bufsize: int = 4096) -> list[bytes]:
    """Everything waiting on a non-blocking socket now."""
    out = []
    while True:
        try:
            out.append(sock.recv(bufsize))
        except (BlockingIOError, InterruptedError):
            return out


def map_fd(prog, name: str) -> int:
    """The file descriptor of map `name` of a BCC program, for map types BCC
    0.26's Python has no class for (SOCKMAP, SOCKHASH)."""
    from ..kernel.bcc_import import bcc
    fd = bcc.libbcc.lib.bpf_table_fd(prog.module, name.encode())
    if fd < 0:
        raise KeyError(f"the program has no map named {name!r}")
    return fd


def sock_map_set(prog, name: str, key: int, sock: socket.socket) -> None:
    """Put a (connected TCP) socket into SOCKMAP/SOCKHASH `name` under u32 `key`."""
    from ..kernel.bcc_import import bcc
    k, v = ct.c_uint32(key), ct.c_int(sock.fileno())
    if bcc.libbcc.lib.bpf_update_elem(map_fd(prog, name), ct.byref(k), ct.byref(v), 0) != 0:
        code = ct.get_errno()
        raise OSError(code, f"adding a socket to {name} failed: {os.strerror(code)} (only "
                            "established TCP sockets, and UDP/unix on newer kernels, fit)")


@contextlib.contextmanager
def sock_map_program(prog, fn_name: str, map_name: str, kind: str = "sk_msg") -> Iterator[None]:
    """Attach `fn_name` to SOCKMAP/SOCKHASH `map_name` as an sk_msg verdict
    ("sk_msg": runs on every sendmsg of a socket in the map) or an sk_skb
    stream verdict ("sk_skb": runs on every chunk a socket in the map
    receives), for a `with` block."""
    from ..kernel.bcc_import import BPF, bcc
    at = bcc.BPFAttachType
    prog_type, attach_type = {"sk_msg": (BPF.SK_MSG, at.SK_MSG_VERDICT),
                              "sk_skb": (BPF.SK_SKB, at.SK_SKB_STREAM_VERDICT)}[kind]
    fn = prog.load_func(fn_name, prog_type)
    fd = map_fd(prog, map_name)
    BPF.attach_func(fn, fd, attach_type)
    try:
        yield
    finally:
        with contextlib.suppress(Exception):
            BPF.detach_func(fn, fd, attach_type)
