"""Plausible wrong solutions for the labs of chapter 12 (see tests/mutants/__init__.py)."""

MUTANTS: dict[str, list[tuple[str, ...]]] = {
    "12.1": [
        ("shared counter updated with a plain += (loses counts on two CPUs)",
         "__sync_fetch_and_add(&all->packets, 1);", "all->packets += 1;"),
        ("per-CPU counter declared as one shared array, plain +=",
         "BPF_PERCPU_ARRAY(per_cpu, struct counters, 1);", "BPF_ARRAY(per_cpu, struct counters, 1);"),
        ("bytes counted from the IP header (Ethernet header left out)",
         "mine->bytes += len;", "mine->bytes += len - 14;"),
        ("read_counters reads CPU 0's slot only",
         'return {"packets": sum(s.packets for s in slots), "bytes": sum(s.bytes for s in slots)}',
         'return {"packets": slots[0].packets, "bytes": slots[0].bytes}'),
        ("the counter drops what it counts",
         "    return XDP_PASS;\n}\n\"\"\"", "    return XDP_DROP;\n}\n\"\"\""),
    ],
}
