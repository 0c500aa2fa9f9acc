"""Plausible wrong solutions for the labs of chapter 12 (see tests/mutants/__init__.py)."""

MUTANTS: dict[str, list[tuple[str, ...]]] = {
    "12.1": [
        ("shared counter updated with a plain += (loses counts on two CPUs)",
         "__sync_fetch_and_add(&all->packets, 1);", "all->packets += 1;"),
        ("per-CPU counter declared as one shared array, plain +=",
         "BPF_PERCPU_ARRAY(per_cpu, struct counters, 1);", "BPF_ARRAY(per_cpu, struct counters, 1);"),
        ("shared bytes updated with a plain += (packets atomic)",
     "__sync_fetch_and_add(&all->bytes, len);", "all->bytes += len;"),
    ("bytes counted from the IP header (Ethernet header left out)",
         "mine->bytes += len;", "mine->bytes += len - 14;"),
        ("read_counters reads CPU 0's slot only",
         'return {"packets": sum(s.packets for s in slots), "bytes": sum(s.bytes for s in slots)}',
         'return {"packets": slots[0].packets, "bytes": slots[0].bytes}'),
        ("the counter drops what it counts",
         "    return XDP_PASS;\n}\n\"\"\"", "    return XDP_DROP;\n}\n\"\"\""),
    ],
}
MUTANTS["12.2"] = [
    ("a failed reservation is not counted",
     "        if (n)\n            *n += 1;\n        return 0;", "        return 0;"),
    ("reserves sizeof(e), the size of a pointer (the verifier refuses the writes)",
     "events.ringbuf_reserve(sizeof(*e))", "events.ringbuf_reserve(sizeof(e))"),
    ("discards the event instead of submitting it",
     "events.ringbuf_submit(e, 0);", "events.ringbuf_discard(e, 0);"),
    ("copies from the stack with ringbuf_output (counts its failures: same events, not zero copy)",
     "    struct event *e = events.ringbuf_reserve(sizeof(*e));\n    if (!e) {",
     "    struct event ev = {}, *e = &ev;\n    ev.fd = args->fd;\n"
     "    ev.pid = bpf_get_current_pid_tgid() >> 32;\n    ev.cpu = bpf_get_smp_processor_id();\n"
     "    if (events.ringbuf_output(&ev, sizeof(ev), 0) < 0) {",
     "    events.ringbuf_submit(e, 0);\n", ""),
    ("lost_total reads CPU 0's slot only",
     'return sum(prog["lost"][0])', 'return prog["lost"][0][0]'),
    ("pid filled with bpf_get_current_uid_gid() (the uid: 0 for root)",
     "e->pid = bpf_get_current_pid_tgid() >> 32;", "e->pid = bpf_get_current_uid_gid();"),
    ("cpu field left unset",
     "    e->cpu = bpf_get_smp_processor_id();\n", "    e->cpu = 0;\n"),
]
MUTANTS["12.3"] = [
    ("keeps every Nth event by a counter (aliases with the workload's rhythm)",
     "    if (bpf_get_prandom_u32() % every != 0)\n        return 0;",
     "    if (!n || *n % every != 0)\n        return 0;"),
    ("controller inverted: budget / rate (always 1 under load)",
     "return max(1, math.ceil(seen_per_s / budget_per_s))",
     "return max(1, math.ceil(budget_per_s / seen_per_s))"),
    ("controller returns the ratio unrounded (a float: config holds a whole number)",
     "return max(1, math.ceil(seen_per_s / budget_per_s))",
     "return max(1, seen_per_s / budget_per_s)"),
    ("controller adds one 'to be safe' (never keeps everything)",
     "return max(1, math.ceil(seen_per_s / budget_per_s))",
     "return max(1, math.ceil(seen_per_s / budget_per_s) + 1)"),
    ("off by one: keeps the event when the draw is 1 (never when every is 1)",
     "if (bpf_get_prandom_u32() % every != 0)", "if (bpf_get_prandom_u32() % every != 1)"),
    ("the sample does not record its every",
     "    s->every = every;\n", "    s->every = 1;\n"),
    ("estimate counts samples, unweighted",
     "totals[fd] = totals.get(fd, 0) + every", "totals[fd] = totals.get(fd, 0) + 1"),
]
