"""Safe places for programs that act: private network namespaces, scratch cgroups.

- net      network sandboxes (veth pairs, stars) and the guard on their interfaces
- traffic  UDP flows, raw frames, a TCP service, ping: traffic with known counts
- flows    UDP/TCP/ICMP traffic with known counts for the TC labs
- packets  test packets (Ethernet, IPv4/6, UDP/TCP/ICMP) with checksums
- xdp      XDP attach/detach on sandbox interfaces, test runs, flood
- tc       TC filters on sandbox interfaces, qdiscs, socket filters, SOCKMAP
- cgroup   scratch cgroups; attach/detach cgroup programs on them only
- sweep    removes what a killed run left behind

XDP and TC attach only to interfaces made here, and cgroup programs only to
cgroups made here: nothing a lab does touches the machine's own network or
processes.
"""
