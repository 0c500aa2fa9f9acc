"""Plausible wrong solutions for the labs of chapter 1 (see tests/mutants/__init__.py)."""

MUTANTS: dict[str, list[tuple[str, str, str]]] = {
    "1.1": [
        ("keyed by the (parent's) comm instead of the file name",
         "bpf_probe_read_user_str(&key.name, sizeof(key.name), args->filename);",
         "bpf_get_current_comm(&key.name, sizeof(key.name));"),
        ("counts twice per exec",
         "execs.increment(key);", "execs.increment(key, 2);"),
        ("never updates the map",
         "    execs.increment(key);\n", "\n"),
        ("map under another name",
         "BPF_HASH(execs,", "BPF_HASH(exec_counts,",
         "execs.increment(key);", "exec_counts.increment(key);"),
    ],
    "1.2": [
        ("reads the host's /proc, ignoring root",
         '(r / "proc/sys/kernel/osrelease").read_text().strip()', 'open("/proc/sys/kernel/osrelease").read().strip()'),
        ("capability bits off by one",
         "cap_eff >> bit & 1", "cap_eff >> (bit + 1) & 1"),
        ("BTF assumed present",
         '(r / "sys/kernel/btf/vmlinux").exists()', "True"),
        ("'is not set' read as 'n'",
         "{k: config.get(k) for k in CONFIG_KEYS}",
         "{k: config.get(k, 'n') for k in CONFIG_KEYS}"),
    ],
    "1.3": [
        ("forgets to close the program",
         "    prog.close()\n", "\n"),
        ("takes the first program bpftool lists",
         'if p.get("name") == fn_name)', ")"),
        ("reads the counter before triggering the program",
         "    for _ in range(3):\n        os.getppid()\n    hits = prog[\"hits\"][0].value\n",
         "    hits = prog[\"hits\"][0].value\n    for _ in range(3):\n        os.getppid()\n"),
        ("claims gone without looking",
         "capture_output=True).returncode != 0", "capture_output=True).returncode == 0"),
    ],
}
