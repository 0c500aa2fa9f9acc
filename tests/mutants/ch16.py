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
