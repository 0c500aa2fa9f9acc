"""Plausible wrong solutions for the labs of chapter 2 (see tests/mutants/__init__.py)."""

MUTANTS: dict[str, list[tuple[str, ...]]] = {
    "2.1": [
        ("keyed by the thread id instead of the process id",
         "key.pid = bpf_get_current_pid_tgid() >> 32;", "key.pid = bpf_get_current_pid_tgid();"),
        ("counts every system call, not only write()",
         "TRACEPOINT_PROBE(syscalls, sys_enter_write)", "TRACEPOINT_PROBE(raw_syscalls, sys_enter)"),
        ("counts bytes written instead of calls",
         "__sync_fetch_and_add(count, 1);", "__sync_fetch_and_add(count, args->count);"),
        ("BCC's increment(): a plain += that two CPUs can interleave",
         "    count = writes.lookup_or_try_init(&key, &zero);\n    if (count)\n"
         "        __sync_fetch_and_add(count, 1);\n"
         "    total = bytes.lookup_or_try_init(&key, &zero);\n    if (total)\n"
         "        __sync_fetch_and_add(total, args->count);\n",
         "    writes.increment(key);\n",
         "BPF_HASH(bytes, struct proc_t, u64);\n", ""),
        ("a plain += on the pointer from lookup_or_try_init",
         "__sync_fetch_and_add(count, 1);", "*count += 1;",
         "    total = bytes.lookup_or_try_init(&key, &zero);\n    if (total)\n"
         "        __sync_fetch_and_add(total, args->count);\n", "",
         "BPF_HASH(bytes, struct proc_t, u64);\n", ""),
        ("stretch goal: counts calls in `bytes`, not bytes",
         "__sync_fetch_and_add(total, args->count);", "__sync_fetch_and_add(total, 1);"),
        ("counts read() instead of write()",
         "TRACEPOINT_PROBE(syscalls, sys_enter_write)", "TRACEPOINT_PROBE(syscalls, sys_enter_read)"),
        ("forgets the process name",
         "    bpf_get_current_comm(&key.comm, sizeof(key.comm));\n", "\n"),
    ],
    "2.2": [
        ("histogram slot off by one",
         "sizes.atomic_increment(bpf_log2l(skb->len));",
         "sizes.atomic_increment(bpf_log2l(skb->len) + 1);"),
        ("adds the length instead of one",
         "sizes.atomic_increment(bpf_log2l(skb->len));",
         "sizes.atomic_increment(bpf_log2l(skb->len), skb->len);"),
        ("linear index instead of log2",
         "sizes.atomic_increment(bpf_log2l(skb->len));", "sizes.atomic_increment(skb->len);"),
        ("payload size instead of frame size (minus the Ethernet header)",
         "sizes.atomic_increment(bpf_log2l(skb->len));",
         "sizes.atomic_increment(bpf_log2l(skb->len - 14));"),
        ("stretch goal: counts frames in total_bytes, not bytes",
         "total_bytes.atomic_increment(0, skb->len);", "total_bytes.atomic_increment(0);"),
        ("attaches to loopback, not the interface it is given",
         "BPF.attach_raw_socket(fn, ifname)", 'BPF.attach_raw_socket(fn, "lo")'),
    ],
    "2.3": [
        ("kernel stack instead of user stack",
         "stacks.get_stackid(ctx, BPF_F_USER_STACK)", "stacks.get_stackid(ctx, 0)"),
        ("no pid filter: returns every process's stacks",
         "        if key.pid != pid:\n            continue\n", ""),
        ("frames leaf first, not root first",
         "            frames.reverse()\n", ""),
        ("symbolized without the pid",
         "prog.sym(addr, key.pid)", "prog.sym(addr, -1)"),
        ("samples at 999 Hz",
         "sample_freq=99)", "sample_freq=999)"),
    ],
}
