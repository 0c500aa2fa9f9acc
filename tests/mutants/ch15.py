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
}
