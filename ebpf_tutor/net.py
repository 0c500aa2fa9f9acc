"""Network sandboxes: veth pairs between network namespaces we create.

XDP and TC programs in this course only ever attach to interfaces made here,
inside private namespaces, so nothing a lab does can touch the machine's own
network. Every namespace is named `ebt-<pid>-<n>` so that `sweep` can remove
what a killed run left behind.

    with VethPair() as lab:                 # two netns joined by a veth pair
        lab.run_in("a", ["ping", "-c", "3", lab.ip_b])
"""
from __future__ import annotations

import contextlib
import itertools
import os
import subprocess
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Iterator, TypeVar

from pyroute2 import NetNS, netns

PREFIX = "ebt-"
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
    of this process. `allow_foreign=True` is the explicit override."""
    if allow_foreign:
        return
    if (ns_name or "", ifname) not in _created_ifaces:
        where = f"namespace {ns_name}" if ns_name else "the host namespace"
        raise NotOurInterface(
            f"refusing to attach to {ifname} in {where}: it was not created by an ebpf_tutor "
            "sandbox. Use VethPair() for a safe lab network (or pass allow_foreign=True if you "
            "really mean it).")


@contextlib.contextmanager
def inside(ns_name: str) -> Iterator[None]:
    """Run the enclosed code (this thread) inside network namespace `ns_name`."""
    netns.pushns(ns_name)
    try:
        yield
    finally:
        netns.popns()


class VethPair:
    """Two fresh namespaces, "a" and "b", joined by a veth pair with
    addresses 10.200.0.1/24 (a) and 10.200.0.2/24 (b). The addresses exist
    only inside the two namespaces: no route leads there from the host."""

    def __init__(self, ip_a: str = "10.200.0.1", ip_b: str = "10.200.0.2", prefix: int = 24):
        base = new_name()
        self.ns = {"a": base + "a", "b": base + "b"}
        self.ifname = {"a": "veth-a", "b": "veth-b"}
        self.ip = {"a": ip_a, "b": ip_b}
        self.ip_a, self.ip_b, self.prefix = ip_a, ip_b, prefix

    def __enter__(self) -> "VethPair":
        try:
            netlink(self._create)
        except BaseException:
            self.close()
            raise
        return self

    def _create(self) -> None:
        for side in "ab":
            netns.create(self.ns[side])
        with NetNS(self.ns["a"]) as na:
            na.link("add", ifname=self.ifname["a"], kind="veth",
                    peer={"ifname": self.ifname["b"], "net_ns_fd": self.ns["b"]})
        for side in "ab":
            with NetNS(self.ns[side]) as n:
                idx = n.link_lookup(ifname=self.ifname[side])[0]
                n.addr("add", index=idx, address=self.ip[side], prefixlen=self.prefix)
                n.link("set", index=idx, state="up")
                lo = n.link_lookup(ifname="lo")[0]
                n.link("set", index=lo, state="up")
            _created_ifaces.add((self.ns[side], self.ifname[side]))

    def ifindex(self, side: str) -> int:
        def lookup() -> int:
            with NetNS(self.ns[side]) as n:
                return n.link_lookup(ifname=self.ifname[side])[0]
        return netlink(lookup)

    def run_in(self, side: str, argv: list[str], **kw) -> subprocess.CompletedProcess:
        """Run a command inside one namespace (ip netns exec)."""
        kw.setdefault("capture_output", True)
        kw.setdefault("text", True)
        return subprocess.run(["ip", "netns", "exec", self.ns[side], *argv], **kw)

    def close(self) -> None:
        for side in "ab":
            _created_ifaces.discard((self.ns[side], self.ifname[side]))
            with contextlib.suppress(Exception):
                netlink(netns.remove, self.ns[side])

    def __exit__(self, *exc) -> None:
        self.close()


def our_namespaces() -> list[str]:
    """Names of namespaces made by any ebpf_tutor run (alive or dead)."""
    return [n for n in netns.listnetns() if n.startswith(PREFIX)]
