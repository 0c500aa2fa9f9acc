"""Plausible wrong solutions for the labs of chapter 11 (see tests/mutants/__init__.py).

Where BPF LSM programs cannot load (the CI machine) only the fallback runs
for real, so every mutant in MUTANTS breaks the fallback. LSM_MUTANTS break
the LSM variant alone: only a kernel with BPF LSM (the course VM) can tell
them from the solution.

Every rule in these labs names only objects the check has just made (a
fresh file, a fresh copy of a program, a kernel-chosen port), so even the
mutants that forget the cgroup test stop nothing else on the machine."""

MUTANTS: dict[str, list[tuple[str, ...]]] = {
    "11.1": [
        ("kills every process that opens the file, not only those in a guarded cgroup",
         "    u64 cgroup = bpf_get_current_cgroup_id();\n    if (!guarded.lookup(&cgroup))\n"
         "        return 0;\n    struct path_t key = {};",
         "    struct path_t key = {};"),
        ("sends SIGTERM, which a process may ignore",
         "        bpf_send_signal(9);", "        bpf_send_signal(15);"),
        ("reads the path as kernel memory: it lives in the caller's memory",
         "bpf_probe_read_user_str(&key.name", "bpf_probe_read_kernel_str(&key.name"),
        ("watches the older open(2) only; programs open files with openat(2)",
         "TRACEPOINT_PROBE(syscalls, sys_enter_openat) { return watch(args->filename); }\n"
         "TRACEPOINT_PROBE(syscalls, sys_enter_openat2) { return watch(args->filename); }",
         "TRACEPOINT_PROBE(syscalls, sys_enter_open) { return watch(args->filename); }"),
    ],
    "11.2": [
        ("kills the program everywhere, not only in a guarded cgroup",
         "    u64 cgroup = bpf_get_current_cgroup_id();\n    if (!guarded.lookup(&cgroup))\n"
         "        return 0;\n    struct linux_binprm *bprm",
         "    struct linux_binprm *bprm"),
        ("sends SIGTERM, which a process may ignore",
         "        bpf_send_signal(9);", "        bpf_send_signal(15);"),
        ("takes the second tracepoint argument (the old pid) for the binprm",
         "(struct linux_binprm *)ctx->args[2];", "(struct linux_binprm *)ctx->args[1];"),
    ],
    "11.3": [
        ("compares the port in network byte order",
         "    u16 port = bpf_ntohs(ctx->user_port);", "    u16 port = ctx->user_port;"),
        ("refuses without choosing the errno (EPERM, not ECONNREFUSED)",
         "        bpf_set_retval(-ECONNREFUSED);\n", ""),
        ("refuses every connection of the cgroup",
         "        return 0;\n    }\n    return 1;", "        return 0;\n    }\n    return 0;"),
    ],
}

LSM_MUTANTS: dict[str, list[tuple[str, ...]]] = {
    "11.1": [
        ("denies the file to every process, not only in a guarded cgroup",
         "    u64 cgroup = bpf_get_current_cgroup_id();\n    if (!guarded.lookup(&cgroup))\n"
         "        return 0;\n    u64 ino = file->f_inode->i_ino;",
         "    u64 ino = file->f_inode->i_ino;"),
        ("denies every file but the blocked one (the lookup test inverted)",
         "    if (blocked.lookup(&ino))\n        return -EPERM;",
         "    if (!blocked.lookup(&ino))\n        return -EPERM;"),
    ],
    "11.2": [
        ("refuses the program everywhere, not only in a guarded cgroup",
         "    u64 cgroup = bpf_get_current_cgroup_id();\n    if (!guarded.lookup(&cgroup))\n"
         "        return 0;\n    u64 ino = bprm->file->f_inode->i_ino;\n    if (blocked.lookup(&ino))\n"
         "        return -EPERM;",
         "    u64 ino = bprm->file->f_inode->i_ino;\n    if (blocked.lookup(&ino))\n"
         "        return -EPERM;"),
    ],
    "11.3": [
        ("compares the port in network byte order",
         "    u16 port = bpf_ntohs(sin->sin_port);", "    u16 port = sin->sin_port;"),
        ("refuses with EPERM, not ECONNREFUSED",
         "        return -ECONNREFUSED;", "        return -EPERM;"),
        # Safe on 6.1 for this hook only: connect() returns 1 before it
        # connects, and the check sees a connection. 6.12 refuses to load it.
        ("returns 1 to refuse (the cgroup programs' convention), not an errno",
         "        return -ECONNREFUSED;", "        return 1;"),
    ],
}
