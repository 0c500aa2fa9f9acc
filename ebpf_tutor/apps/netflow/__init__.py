"""Chapter 16's network traffic analyzer: `ebpf-tutor netflow`.

An XDP and/or TC program keeps a table of IPv4 flows (5-tuples, one
direction each) with packets and frame bytes, counts protocols, flags port
scans and floods per source, and samples packets into a ring buffer that
user space writes out as a pcap file (readable by tshark, tcpdump,
Wireshark).

    flowtable.py  the BPF program's options and its loader (`Analyzer`)
    records.py    flows, protocol shares, top talkers and alerts read from the maps
    pcap.py       a pcap writer (and reader) for sampled frames
    peer.py       tshark on the same veth: capture, `-z conv,tcp|udp`, comparison
    workload.py   traffic of known shape: TCP exchanges of known sizes, UDP, scans, floods
    report.py     the table and the JSON the command prints
    cli.py        `ebpf-tutor netflow`: argument parsing and the run loop
"""
