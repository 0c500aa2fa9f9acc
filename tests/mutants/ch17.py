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
