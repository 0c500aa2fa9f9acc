"""Plausible wrong solutions for the labs of chapter 16 (see tests/mutants/__init__.py)."""

MUTANTS: dict[str, list[tuple[str, ...]]] = {
    "16.1": [
        ("counts the IP packet's length, not the frame's",
         "__sync_fetch_and_add(&v->bytes, len);", "__sync_fetch_and_add(&v->bytes, ntohs(ip->tot_len));"),
        ("ports right after a 20-byte IP header (ignores ihl)",
         "struct ports *p = (void *)ip + ip->ihl * 4;", "struct ports *p = (void *)(ip + 1);"),
        ("ports kept in network order",
         "key.sport = ntohs(p->source);\n        key.dport = ntohs(p->dest);",
         "key.sport = p->source;\n        key.dport = p->dest;"),
        ("later fragments read as if they had a UDP header",
         "int later_fragment = ip->frag_off & htons(0x1FFF);", "int later_fragment = 0;"),
        ("overwrites the counters with the last packet",
         "        __sync_fetch_and_add(&v->packets, 1);\n        __sync_fetch_and_add(&v->bytes, len);\n",
         "        v->packets = 1;\n        v->bytes = len;\n"),
        ("one entry per conversation: the smaller address first",
         "    key.saddr = ip->saddr;\n    key.daddr = ip->daddr;",
         "    key.saddr = ip->saddr < ip->daddr ? ip->saddr : ip->daddr;\n"
         "    key.daddr = ip->saddr < ip->daddr ? ip->daddr : ip->saddr;"),
    ],
}
MUTANTS["16.2"] = [
    ("counts every attempt, repeats included (no `touched` check)",
     "    if (when && *when == s->window_start)\n        return XDP_PASS;                /* tried already in this window */\n", ""),
    ("SYN+ACK counted as an attempt",
     "int attempt = proto == 17 || (proto == 6 && (tcp_flags & (TCP_SYN | TCP_ACK)) == TCP_SYN);",
     "int attempt = proto == 17 || proto == 6;"),
    ("the window never ends",
     "if (now - s->window_start > WINDOW_NS) {", "if (s->window_start == 0) {"),
    ("a try is a port, whatever the destination",
     "struct touch_key t = {.saddr = saddr, .daddr = daddr, .dport = dport, .proto = proto};",
     "struct touch_key t = {.saddr = saddr, .dport = dport, .proto = proto};"),
    ("alerts on every packet past the threshold",
     "if (ports >= SCAN_PORTS && !s->scan_alerted) {", "if (ports >= SCAN_PORTS) {",
     "if (packets >= FLOOD_PACKETS && !s->flood_alerted) {", "if (packets >= FLOOD_PACKETS) {"),
    ("alerts past the threshold, not at it",
     "if (ports >= SCAN_PORTS && !s->scan_alerted) {", "if (ports > SCAN_PORTS && !s->scan_alerted) {",
     "if (packets >= FLOOD_PACKETS && !s->flood_alerted) {",
     "if (packets > FLOOD_PACKETS && !s->flood_alerted) {"),
    ("a new window keeps the alerted flags",
     "        s->scan_alerted = 0;\n        s->flood_alerted = 0;\n", ""),
]
