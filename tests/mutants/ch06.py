"""Plausible wrong solutions for the labs of chapter 6 (see tests/mutants/__init__.py)."""

MUTANTS: dict[str, list[tuple[str, ...]]] = {
    "6.1": [
        ("keyed by thread id instead of process id",
         "{.pid = bpf_get_current_pid_tgid() >> 32,", "{.pid = (u32)bpf_get_current_pid_tgid(),"),
        ("an error taken to be ret == -1, as in user space",
         "if (args->ret >= 0)\n        return 0;", "if (args->ret != -1)\n        return 0;"),
        ("any non-zero return counted as an error",
         "if (args->ret >= 0)\n        return 0;", "if (args->ret == 0)\n        return 0;"),
        ("calls counted at sys_exit, so exit_group (which never returns) is missed",
         "    struct val_t *v = counts.lookup_or_try_init(&key, &zero);\n    if (v)\n        __sync_fetch_and_add(&v->calls, 1);\n    return 0;\n}\n\nTRACEPOINT_PROBE(raw_syscalls, sys_exit) {\n    // TODO 2: when args->ret is an error, add one to errors of the same key\n    if (args->ret >= 0)\n        return 0;\n    struct key_t key = {.pid = bpf_get_current_pid_tgid() >> 32, .nr = args->id};\n    struct val_t *v = counts.lookup(&key);\n    if (v)\n        __sync_fetch_and_add(&v->errors, 1);",
         "    (void)zero;\n    return 0;\n}\n\nTRACEPOINT_PROBE(raw_syscalls, sys_exit) {\n    struct key_t key = {.pid = bpf_get_current_pid_tgid() >> 32, .nr = args->id};\n    struct val_t zero = {};\n    struct val_t *v = counts.lookup_or_try_init(&key, &zero);\n    if (!v)\n        return 0;\n    __sync_fetch_and_add(&v->calls, 1);\n    if (args->ret < 0)\n        __sync_fetch_and_add(&v->errors, 1);"),
        ("the first argument taken for the syscall number",
         "struct key_t key = {.pid = bpf_get_current_pid_tgid() >> 32, .nr = args->id};\n    struct val_t zero",
         "struct key_t key = {.pid = bpf_get_current_pid_tgid() >> 32, .nr = args->args[0]};\n    struct val_t zero"),
    ],
    "6.2": [
        ("forgets that a task switched out while runnable waits again",
         "    if ((args->prev_state & 0xff) == 0)\n        enqueued(args->prev_pid);\n", ""),
        ("histogram in nanoseconds",
         "u64 delta_us = (bpf_ktime_get_ns() - *tsp) / 1000;", "u64 delta_us = bpf_ktime_get_ns() - *tsp;"),
        ("histogram in milliseconds",
         "u64 delta_us = (bpf_ktime_get_ns() - *tsp) / 1000;",
         "u64 delta_us = (bpf_ktime_get_ns() - *tsp) / 1000000;"),
        ("ends the wait of the task leaving the CPU, not the one switched in",
         "u32 pid = args->next_pid;", "u32 pid = args->prev_pid;"),
        ("forgets sched_wakeup (only new tasks and preemptions)",
         "TRACEPOINT_PROBE(sched, sched_wakeup) { return enqueued(args->pid); }\n", ""),
    ],
    "6.3": [
        ("histogram in nanoseconds",
         "dist.increment(bpf_log2l(delta / 1000));", "dist.increment(bpf_log2l(delta));"),
        ("divides the bucket instead of the latency",
         "dist.increment(bpf_log2l(delta / 1000));", "dist.increment(bpf_log2l(delta) / 1000);"),
        ("stores the issue timestamp instead of the latency",
         "recent.update(&key, &delta);", "recent.update(&key, tsp);"),
        ("completion keyed by the end sector of the request",
         "TRACEPOINT_PROBE(block, block_rq_complete) {\n    // TODO 3: find the issue time (none: return), store the latency in ns in\n"
         "    //         `recent`, count it in `dist` in microseconds, forget the start\n"
         "    struct req_t key = {.dev = args->dev, .sector = args->sector};",
         "TRACEPOINT_PROBE(block, block_rq_complete) {\n"
         "    struct req_t key = {.dev = args->dev, .sector = args->sector + args->nr_sector};"),
    ],
}
