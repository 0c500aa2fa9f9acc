"""Network sandboxes: veth pairs between network namespaces we create.

XDP and TC programs in this course only ever attach to interfaces made here,
inside private namespaces, so nothing a lab does can touch the machine's own
network. Every namespace is named `ebt-<pid>-<n>...` so that `sweep` can
remove what a killed run left behind.

    with VethPair() as lab:                 # two netns joined by a veth pair
        lab.run_in("a", ["ping", "-c", "3", lab.ip_b])

    with Star(["client", "b1", "b2"], hub="lb") as net:   # a router and 3 leaves
        net.run_in("client", ["ping", "-c", "1", net.ip["b1"]])

Counters (`link_stats`) are at the bottom. The traffic helpers (`UdpFlow`,
`UdpSink`, `send_frames`, `TcpServer`, `tcp_exchange`, `ping`, the frame
builders) live in `ebpf_tutor.sandbox.traffic`, which builds on this module.
"""
from __future__ import annotations

import array
import contextlib
import ctypes
import fcntl
import itertools
import os
import socket
import struct
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Iterable, Iterator, TypeVar

from pyroute2 import NetNS, netns

PREFIX = "ebt-"
FIRST_INDEX = 10          # our veth ends get 10, 11, ...: never their peer's index, small enough for a devmap key
_counter = itertools.count()


class NotOurInterface(PermissionError):
    """Refused: XDP/TC may only attach to interfaces this package created."""


_created_ifaces: set[tuple[str, str]] = set()   # (netns name, ifname)
_netlink_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ebt-netlink")
T = TypeVar("T")


def netlink(fn: Callable[..., T], *args, **kwargs) -> T:
    """Run a pyroute2 call on a thread of its own. pyroute2 0.9's blocking API
    drives an asyncio loop, which fails inside Jupyter (whose loop is already
    running); on a plain thread it works everywhere."""
    return _netlink_thread.submit(fn, *args, **kwargs).result()


def new_name(tag: str = "") -> str:
    return f"{PREFIX}{os.getpid()}-{next(_counter)}{('-' + tag) if tag else ''}"


def guard(ns_name: str | None, ifname: str, allow_foreign: bool = False) -> None:
    """Raise NotOurInterface unless (ns_name, ifname) was created by a sandbox
    of this process and is still alive. `ns_name=None` is the host namespace,
    where nothing is ever ours. `allow_foreign=True` is the explicit override."""
    if allow_foreign:
        return
    if (ns_name or "", ifname) not in _created_ifaces:
        where = f"namespace {ns_name}" if ns_name else "the host namespace"
        raise NotOurInterface(
            f"refusing to attach to {ifname} in {where}: it was not created by an ebpf_tutor "
            "sandbox. Use VethPair() for a safe lab network (or pass allow_foreign=True if you "
            "really mean it).")


def is_ours(ns_name: str | None, ifname: str) -> bool:
    """True if a live sandbox of this process created that interface."""
    return (ns_name or "", ifname) in _created_ifaces


def uplink() -> str | None:
    """The host's uplink: the interface of the default IPv4 route in the host
    namespace (looked up read-only), or None if there is no default route."""
    from pyroute2 import IPRoute

    def lookup() -> str | None:
        with IPRoute() as ipr:
            for route in ipr.get_routes(family=socket.AF_INET, table=254):
                if route.get("dst_len") == 0 and route.get_attr("RTA_OIF"):
                    return ipr.get_links(route.get_attr("RTA_OIF"))[0].get_attr("IFLA_IFNAME")
        return None
    return netlink(lookup)


_libc = ctypes.CDLL(None, use_errno=True)
CLONE_NEWNET = 0x40000000


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        code = ctypes.get_errno()
        raise OSError(code, f"setns: {os.strerror(code)}")


@contextlib.contextmanager
def inside(ns_name: str) -> Iterator[None]:
    """Run the enclosed code (this thread only) inside network namespace
    `ns_name`, then come back. A namespace that does not exist is an error,
    never silently created."""
    target = os.open(f"/run/netns/{ns_name}", os.O_RDONLY)   # FileNotFoundError if gone
    saved = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    try:
        _setns(target)
        try:
            yield
        finally:
            _setns(saved)
    finally:
        os.close(saved)
        os.close(target)


def open_ns(ns_name: str) -> NetNS:
    """A netlink handle on an existing namespace (pyroute2's default would
    create a missing one; a removed sandbox must stay removed)."""
    return NetNS(ns_name, flags=0)


def socket_in(ns_name: str, family: int = socket.AF_INET, kind: int = socket.SOCK_DGRAM,
              proto: int = 0) -> socket.socket:
    """A socket that lives in namespace `ns_name` (a socket keeps the namespace
    it was created in, whichever thread uses it later). Close it when done:
    an open socket keeps a removed namespace alive."""
    def make() -> socket.socket:
        with inside(ns_name):
            return socket.socket(family, kind, proto)
    return netlink(make)


# ----------------------------------------------------------- in a namespace --
def _sysctl(ns_name: str, key: str, value: str | int) -> None:
    """Set net sysctl `key` (dotted, e.g. net.ipv4.ip_forward) in a namespace.
    Call on the netlink thread."""
    with inside(ns_name):
        Path("/proc/sys", *key.split(".")).write_text(f"{value}\n")


SIOCETHTOOL = 0x8946
ETHTOOL_STXCSUM, ETHTOOL_SGRO = 0x17, 0x2C


def _ethtool(ns_name: str, ifname: str, cmd: int, value: int) -> None:
    """One legacy ethtool 'set' ioctl (what `ethtool -K` does) in a namespace.
    Call on the netlink thread."""
    with inside(ns_name):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        buf = array.array("I", [cmd, value])
        ifr = struct.pack("16sP", ifname.encode(), buf.buffer_info()[0])
        fcntl.ioctl(s.fileno(), SIOCETHTOOL, ifr)
    finally:
        s.close()


class Sandbox:
    """Network namespaces made by this process, veth pairs between them, and
    their cleanup. `VethPair` and `Star` are the two shapes the course uses.

    quiet      no IPv6 and static ARP entries: only the packets you send are
               on the wire, so counts are exact.
    xdp_ready  GRO on and TX checksum offload off on every veth. A veth
               receives XDP_REDIRECT frames only when GRO (or an XDP program)
               is on, and a redirected frame loses the 'checksum not done yet'
               mark that locally sent TCP/UDP packets carry. (XDP_TX frames
               reach a peer promptly only if the peer runs XDP itself.)"""

    def __init__(self, quiet: bool = False, xdp_ready: bool = False):
        self.ns: dict[str, str] = {}
        self.quiet, self.xdp_ready = quiet, xdp_ready
        self._links: list[tuple[str, str, str, str]] = []   # (key, ifname, peer key, peer ifname)
        self._base = new_name()
        self._handles: dict[str, NetNS] = {}
        self._next_index = FIRST_INDEX

    # --- building (all on the netlink thread, one netlink socket per namespace)
    def _nl(self, key: str) -> NetNS:
        if key not in self._handles:
            self._handles[key] = open_ns(self.ns[key])
        return self._handles[key]

    def _build_all(self) -> None:
        try:
            self._build()
            self._wait_until_up()
        finally:
            for h in self._handles.values():
                h.close()
            self._handles = {}

    def _make_ns(self, key: str) -> None:
        name = self._base + key
        netns.create(name)
        self.ns[key] = name
        n = self._nl(key)
        n.link("set", index=n.link_lookup(ifname="lo")[0], state="up")
        if self.quiet:
            for scope in ("all", "default"):
                _sysctl(name, f"net.ipv6.conf.{scope}.disable_ipv6", 1)

    def _make_veth(self, key: str, ifname: str, ip: str, peer: str, peer_if: str, peer_ip: str,
                   prefix: int) -> None:
        # Two fresh namespaces would give both ends ifindex 2. A veth whose
        # index equals its peer's looks like a plain device to the kernel's
        # link watcher, which then turns the carrier on up to 1 s later, and
        # the first packets are dropped meanwhile. A distinct index makes
        # that immediate.
        self._nl(key).link("add", ifname=ifname, kind="veth", index=self._next_index,
                           peer={"ifname": peer_if, "net_ns_fd": self.ns[peer]})
        self._next_index += 1
        for k, ifn, addr in ((key, ifname, ip), (peer, peer_if, peer_ip)):
            n = self._nl(k)
            idx = n.link_lookup(ifname=ifn)[0]
            n.addr("add", index=idx, address=addr, prefixlen=prefix)
            n.link("set", index=idx, state="up")
            _created_ifaces.add((self.ns[k], ifn))
        self._links.append((key, ifname, peer, peer_if))
        if self.xdp_ready:      # both ends up first: GRO starts a veth's NAPI only when up
            for k, ifn in ((key, ifname), (peer, peer_if)):
                _ethtool(self.ns[k], ifn, ETHTOOL_SGRO, 1)
                _ethtool(self.ns[k], ifn, ETHTOOL_STXCSUM, 0)
        if self.quiet:   # each side knows the other's MAC: no ARP on the wire
            for k, ifn, pk, pif, pip in ((key, ifname, peer, peer_if, peer_ip),
                                         (peer, peer_if, key, ifname, ip)):
                mac = self._nl(pk).get_links(ifname=pif)[0].get_attr("IFLA_ADDRESS")
                n = self._nl(k)
                n.neigh("add", dst=pip, lladdr=mac, ifindex=n.link_lookup(ifname=ifn)[0],
                        state=0x80)   # NUD_PERMANENT

    def _build(self) -> None:
        raise NotImplementedError

    def _wait_until_up(self, timeout: float = 5.0) -> None:
        """Return once every veth end is operationally up: it carries packets."""
        ends = [(k, ifn) for key, ifname, peer, peer_if in self._links
                for k, ifn in ((key, ifname), (peer, peer_if))]
        deadline = time.monotonic() + timeout
        while ends:
            ends = [(k, ifn) for k, ifn in ends
                    if self._nl(k).get_links(ifname=ifn)[0].get_attr("IFLA_OPERSTATE") != "UP"]
            if ends and time.monotonic() > deadline:
                raise RuntimeError(f"veth {ends[0][1]} in {self.ns[ends[0][0]]} was not up "
                                   f"after {timeout:.0f} s")
            if ends:
                time.sleep(0.002)

    def __enter__(self):
        try:
            netlink(self._build_all)
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Detach XDP and TC programs, delete our veths, remove our namespaces.
        Safe to call twice; runs on success, error and Ctrl-C alike."""
        names = set(self.ns.values())
        for entry in [e for e in _created_ifaces if e[0] in names]:
            _created_ifaces.discard(entry)
        for key, ifname, _peer, _peer_if in self._links:
            with contextlib.suppress(Exception):
                netlink(_delete_link, self.ns[key], ifname)
        self._links = []
        for name in list(self.ns.values()):
            with contextlib.suppress(Exception):
                netlink(netns.remove, name)

    # --- using
    def where(self, key: str, ifname: str | None = None) -> tuple[str, str]:
        """(namespace name, interface name): what xdp.attach() takes."""
        return self.ns[key], ifname or self._default_if(key)

    def _default_if(self, key: str) -> str:
        raise NotImplementedError

    def ifindex(self, key: str, ifname: str | None = None) -> int:
        ns_name, ifn = self.where(key, ifname)

        def lookup() -> int:
            with open_ns(ns_name) as n:
                return n.link_lookup(ifname=ifn)[0]
        return netlink(lookup)

    def mac(self, key: str, ifname: str | None = None) -> str:
        """The interface's MAC address as 'aa:bb:cc:dd:ee:ff'."""
        ns_name, ifn = self.where(key, ifname)

        def lookup() -> str:
            with open_ns(ns_name) as n:
                return n.get_links(ifname=ifn)[0].get_attr("IFLA_ADDRESS")
        return netlink(lookup)

    def stats(self, key: str, ifname: str | None = None) -> dict[str, int]:
        return link_stats(*self.where(key, ifname))

    def run_in(self, side: str, argv: list[str], **kw) -> subprocess.CompletedProcess:
        """Run a command inside one namespace (ip netns exec)."""
        kw.setdefault("capture_output", True)
        kw.setdefault("text", True)
        return subprocess.run(["ip", "netns", "exec", self.ns[side], *argv], **kw)

    def sysctl(self, key: str, name: str, value: str | int) -> None:
        """Set a net.* sysctl inside namespace `key`."""
        netlink(_sysctl, self.ns[key], name, value)

    def add_address(self, key: str, ip: str, prefix: int = 32, ifname: str = "lo") -> None:
        """One more address, by default on the namespace's loopback (a VIP)."""
        def add() -> None:
            with open_ns(self.ns[key]) as n:
                n.addr("add", index=n.link_lookup(ifname=ifname)[0], address=ip, prefixlen=prefix)
        netlink(add)

    def add_route(self, key: str, dst: str, via: str | None = None, kind: str = "unicast") -> None:
        """A route in namespace `key`: dst 'a.b.c.d/len', through `via`, or
        kind='blackhole' to drop what would be routed there."""
        def add() -> None:
            with open_ns(self.ns[key]) as n:
                if kind == "unicast":
                    n.route("add", dst=dst, gateway=via)
                else:
                    n.route("add", dst=dst, type=kind)
        netlink(add)


def _delete_link(ns_name: str, ifname: str) -> None:
    """Delete a veth (and so its peer, and any XDP or TC program on either)."""
    with open_ns(ns_name) as n:
        found = n.link_lookup(ifname=ifname)
        if found:
            n.link("del", index=found[0])


class VethPair(Sandbox):
    """Two fresh namespaces, "a" and "b", joined by a veth pair with
    addresses 10.200.0.1/24 (a) and 10.200.0.2/24 (b). The addresses exist
    only inside the two namespaces: no route leads there from the host."""

    def __init__(self, ip_a: str = "10.200.0.1", ip_b: str = "10.200.0.2", prefix: int = 24,
                 quiet: bool = False, xdp_ready: bool = False):
        super().__init__(quiet=quiet, xdp_ready=xdp_ready)
        self.ns = {"a": self._base + "a", "b": self._base + "b"}
        self.ifname = {"a": "veth-a", "b": "veth-b"}
        self.ip = {"a": ip_a, "b": ip_b}
        self.ip_a, self.ip_b, self.prefix = ip_a, ip_b, prefix

    def __enter__(self) -> "VethPair":
        return super().__enter__()

    def _build(self) -> None:
        for side in "ab":
            self._make_ns(side)
        self._make_veth("a", self.ifname["a"], self.ip_a, "b", self.ifname["b"], self.ip_b,
                        self.prefix)

    def _default_if(self, key: str) -> str:
        return self.ifname[key]

    def ifindex(self, side: str, ifname: str | None = None) -> int:
        return super().ifindex(side, ifname)


class Star(Sandbox):
    """A hub namespace (a router) with one veth pair to each leaf namespace.

    Leaf i has 10.201.<i+1>.2/24 on `eth0` and a default route through the hub,
    whose side of that link is `to-<leaf>` with 10.201.<i+1>.1/24. The hub
    forwards between leaves like any router (ip_forward=1), so client -> hub
    -> backend works with no program at all; put XDP on a hub interface to
    take over.

        with Star(["client", "b1", "b2"], hub="lb") as net:
            net.ip["b1"], net.gw["b1"], net.where("lb", "to-client")
    """

    LEAF_IF = "eth0"

    def __init__(self, leaves: Iterable[str], hub: str = "hub", quiet: bool = True,
                 xdp_ready: bool = True, forward: bool = True):
        super().__init__(quiet=quiet, xdp_ready=xdp_ready)
        self.leaves, self.hub, self.forward = list(leaves), hub, forward
        for leaf in self.leaves:
            if len(f"to-{leaf}") > 15:
                raise ValueError(f"leaf name {leaf!r} is too long for an interface name")
        self.ip = {leaf: f"10.201.{i + 1}.2" for i, leaf in enumerate(self.leaves)}
        self.gw = {leaf: f"10.201.{i + 1}.1" for i, leaf in enumerate(self.leaves)}
        self.hub_if = {leaf: f"to-{leaf}" for leaf in self.leaves}

    def __enter__(self) -> "Star":
        return super().__enter__()

    def _build(self) -> None:
        for key in [self.hub, *self.leaves]:
            self._make_ns(key)
        for scope in ("all", "default"):
            _sysctl(self.ns[self.hub], f"net.ipv4.conf.{scope}.rp_filter", 0)
        _sysctl(self.ns[self.hub], "net.ipv4.ip_forward", int(self.forward))
        for leaf in self.leaves:
            self._make_veth(self.hub, self.hub_if[leaf], self.gw[leaf],
                            leaf, self.LEAF_IF, self.ip[leaf], 24)
            self._nl(leaf).route("add", dst="0.0.0.0/0", gateway=self.gw[leaf])

    def _default_if(self, key: str) -> str:
        if key == self.hub:
            raise ValueError(f"the hub has one interface per leaf: say which, e.g. "
                             f"where({self.hub!r}, {self.hub_if[self.leaves[0]]!r})")
        return self.LEAF_IF


def our_namespaces() -> list[str]:
    """Names of namespaces made by any ebpf_tutor run (alive or dead)."""
    return [n for n in netns.listnetns() if n.startswith(PREFIX)]


# --------------------------------------------------------------- counters ---
def link_stats(ns_name: str, ifname: str) -> dict[str, int]:
    """The interface's counters (rx_packets, tx_packets, rx_dropped, ...)."""
    def read() -> dict[str, int]:
        with open_ns(ns_name) as n:
            link = n.get_links(ifname=ifname)[0]
            st = link.get_attr("IFLA_STATS64")
            return {k: st[k] for k in st.keys() if isinstance(st[k], int)} if st else {}
    return netlink(read)
