"""Plausible wrong solutions for the labs of chapter 5 (see tests/mutants/__init__.py).

On a kernel without kprobes only the tracepoint variant and the shared part
run for real, so every mutant in MUTANTS breaks one of those. KPROBE_MUTANTS
break the kprobe variant alone: only a kernel with kprobes (the course VM)
can tell them from the solution, and the tests skip them elsewhere."""

MUTANTS: dict[str, list[tuple[str, ...]]] = {
    "5.1": [
        ("keyed by thread id instead of process id",
         "u32 tgid = bpf_get_current_pid_tgid() >> 32;", "u32 tgid = bpf_get_current_pid_tgid();"),
        ("a failure taken to be ret == -1, as in user space",
         "if (ret >= 0)\n        return;", "if (ret != -1)\n        return;"),
        ("counts a call at entry and again at exit",
         "TRACEPOINT_PROBE(syscalls, sys_exit_openat) { count_return(args->ret); return 0; }",
         "TRACEPOINT_PROBE(syscalls, sys_exit_openat) { count_call(); count_return(args->ret); return 0; }"),
        ("traces the open syscall, which C libraries no longer call",
         "TRACEPOINT_PROBE(syscalls, sys_enter_openat) { count_call(); return 0; }",
         "TRACEPOINT_PROBE(syscalls, sys_enter_open) { count_call(); return 0; }"),
    ],
    "5.2": [
        ("copies the 4-tuple only when the socket starts (source port still 0)",
         "    c->saddr = saddr;\n    c->daddr = daddr;\n    c->sport = sport;\n    c->dport = dport;\n",
         "    if (newstate == TCP_SYN_SENT || newstate == TCP_SYN_RECV) {\n"
         "        c->saddr = saddr; c->daddr = daddr; c->sport = sport; c->dport = dport;\n    }\n"),
        ("converts the tracepoint's ports, already in host order",
         "args->sport, args->dport);", "bpf_ntohs(args->sport), bpf_ntohs(args->dport));"),
        ("records the old state instead of the new one",
         "track((u64)args->skaddr, args->newstate,", "track((u64)args->skaddr, args->oldstate,"),
        ("takes the pid at every transition (softirq context included)",
         "    if (newstate == TCP_SYN_SENT)\n        c->pid", "    c->pid"),
    ],
    "5.3": [
        ("compares op without masking FUTEX_PRIVATE_FLAG",
         "int cmd = args->op & FUTEX_CMD_MASK;", "int cmd = args->op;"),
        ("times every futex call, wakes included",
         "    if (cmd == FUTEX_WAIT || cmd == FUTEX_WAIT_BITSET || cmd == FUTEX_LOCK_PI)\n        wait_begins",
         "    wait_begins"),
        ("keeps the start per process, not per thread",
         "u32 tid = bpf_get_current_pid_tgid();", "u32 tid = bpf_get_current_pid_tgid() >> 32;",
         "    u32 tid = id;\n", "    u32 tid = id >> 32;\n"),
        ("adds microseconds instead of nanoseconds",
         "bpf_ktime_get_ns() - s->ts);", "(bpf_ktime_get_ns() - s->ts) / 1000);"),
    ],
}

KPROBE_MUTANTS: dict[str, list[tuple[str, ...]]] = {
    "5.1": [
        ("reads the first argument register in the return probe, not the return value",
         "count_return(PT_REGS_RC(ctx));", "count_return(PT_REGS_PARM1(ctx));"),
    ],
    "5.2": [
        ("records the state the socket leaves, read from the socket itself",
         "track((u64)sk, state, saddr,", "track((u64)sk, sk->__sk_common.skc_state, saddr,"),
    ],
    "5.3": [
        ("return probe attached as a kprobe: the wait ends as it begins",
         'prog.attach_kretprobe(event="futex_wait"', 'prog.attach_kprobe(event="futex_wait"'),
    ],
}
