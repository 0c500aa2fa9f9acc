"""Safe places for programs that act: private network namespaces, scratch cgroups.

- net      network sandboxes (veth pairs, stars) and the guard on their interfaces
- traffic  numbered UDP flows and their sink, raw frames, a TCP service, ping
- flows    bulk flows at a given rate, measured by interface counters (TC labs)
- packets  test packets (Ethernet, IPv4/6, UDP/TCP/ICMP) with checksums
- xdp      XDP attach/detach on sandbox interfaces, test runs, flood
- tc       TC filters on sandbox interfaces, qdiscs, socket filters, SOCKMAP
- cgroup   scratch cgroups; attach/detach cgroup programs on them only
- prometheus  a real Prometheus server on loopback for a notebook or check
           (temporary config and data, dies with its owner), promtool's lint
- attempts try actions (read a file, run a program, connect) from a fresh
           process, inside or outside a scratch cgroup
- sweep    removes what a killed run left behind

XDP and TC attach only to interfaces made here, and cgroup programs only to
cgroups made here: nothing a lab does touches the machine's own network or
processes.
"""
