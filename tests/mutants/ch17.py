"""Plausible wrong solutions for the labs of chapter 17 (see tests/mutants/__init__.py)."""

MUTANTS: dict[str, list[tuple[str, ...]]] = {
    "17.1": [
        ("no container filter: every exec on the machine is counted",
         "    if (!containers.lookup(&cgroup))\n        return 0;\n", ""),
        ("keyed by process id, not by cgroup id",
         "    key.cgroup = cgroup;", "    key.cgroup = bpf_get_current_pid_tgid() >> 32;"),
        ("overwrites the count with 1",
         "        __sync_fetch_and_add(n, 1);", "        *n = 1;"),
    ],
}
MUTANTS["17.2"] = [
    ("never forgets a closed socket (its number comes back for a file)",
     "    sockets.delete(&k);\n", ""),
    ("a copy of a socket is not marked as a socket (misses 0>&1)",
     "    sockets.update(&copy, &one);\n", ""),
    ("stdin and stdout only, not stderr",
     "    if (newfd <= 2) {", "    if (newfd < 2) {"),
    ("no container filter at dup: the host's reverse shell is counted too",
     "    if (!watched())\n        return 0;\n    struct sock_key k = {.tgid = bpf_get_current_pid_tgid() >> 32, .fd = oldfd};",
     "    struct sock_key k = {.tgid = bpf_get_current_pid_tgid() >> 32, .fd = oldfd};",
     "    if (args->ret < 0 || !watched())", "    if (args->ret < 0)"),
    ("dup3 not handled",
     "TRACEPOINT_PROBE(syscalls, sys_enter_dup3) { return copied(args->oldfd, args->newfd); }",
     "TRACEPOINT_PROBE(syscalls, sys_enter_dup3) { return 0; }"),
    ("any copy onto 0-2 counts, socket or not",
     "    if (!sockets.lookup(&k))\n        return 0;\n", ""),
]
MUTANTS["17.3"] = [
    ("kills shells in every cgroup (no guarded test)",
     "    if (!guarded.lookup(&cgroup))\n        return 0;\n", ""),
    ("kills every program of the guarded container (no name test)",
     "    if (!shells.lookup(&name))\n        return 0;\n", ""),
    ("SIGTERM instead of SIGKILL",
     "    bpf_send_signal(9);", "    bpf_send_signal(15);"),
    ("kills without counting",
     "        __sync_fetch_and_add(n, 1);", ""),
]
