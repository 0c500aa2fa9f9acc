"""Plausible wrong solutions for the labs of chapter 15 (see tests/mutants/__init__.py)."""

MUTANTS: dict[str, list[tuple[str, ...]]] = {
    "15.1": [
        ("a name that merely starts with the wanted one passes (stops at the wanted name's end)",
         "            if (comm[i] != want->c[i]) {\n                comm_ok = 0;\n                break;\n            }\n            if (comm[i] == 0)\n                break;",
         "            if (want->c[i] == 0)\n                break;\n            if (comm[i] != want->c[i]) {\n                comm_ok = 0;\n                break;\n            }"),
        ("either filter is enough",
         "return comm_ok && cgroup_ok;", "return comm_ok || cgroup_ok;"),
        ("an empty cgroup filter (0) stops everyone",
         "    if (*cg)\n        cgroup_ok = bpf_get_current_cgroup_id() == *cg;",
         "    cgroup_ok = bpf_get_current_cgroup_id() == *cg;"),
        ("only the first 8 bytes of the name compared",
         "for (int i = 0; i < 16; i++) {", "for (int i = 0; i < 8; i++) {"),
    ],
    "15.2": [
        ("flags read from the mode argument", "a.flags = args->flags;", "a.flags = args->mode;"),
        ("the return value never filled in", "e->ret = args->ret;", "e->ret = 0;"),
        ("the path read from where the pointer is kept, not where it points",
         "(void *)a->filename);", "(void *)&a->filename);"),
        ("O_RDONLY (0) never named",
         "names = [ACCMODE[flags & os.O_ACCMODE]] + [",
         "names = ([ACCMODE[flags & os.O_ACCMODE]] if flags & os.O_ACCMODE else []) + ["),
        ("the mode shown for every call", "    if flags & os.O_CREAT:\n        args.append",
         "    if True:\n        args.append"),
        ("a failure shown as the kernel's raw value",
         'result = f"-1 {errno.errorcode[err]} ({os.strerror(err)})"', 'result = str(ev["ret"])'),
        ("the mode in decimal", '"0%02o" % ev["mode"]', '"0%d" % ev["mode"]'),
    ],
    "15.3": [
        ("calls counted at sys_enter, so exit_group (which never returns) gets a row",
         "    start.update(&tid, &ts);\n",
         "    start.update(&tid, &ts);\n    u32 nr = args->id;\n    struct stat_t empty = {};\n"
         "    struct stat_t *c = stats.lookup_or_try_init(&nr, &empty);\n    if (c)\n"
         "        c->calls += 1;\n",
         "        s->calls += 1;\n", ""),
        ("start time keyed by process, so two threads overwrite each other's",
         "    u32 tid = (u32)id;\n", "    u32 tid = id >> 32;\n",
         "u32 tid = (u32)bpf_get_current_pid_tgid();", "u32 tid = bpf_get_current_pid_tgid() >> 32;"),
        ("any non-zero return counted as an error",
         "if (args->ret < 0 && args->ret >= -4095)", "if (args->ret != 0)"),
        ("the end timestamp added instead of the duration",
         "s->total_ns += took;", "s->total_ns += bpf_ktime_get_ns();"),
    ],
}
