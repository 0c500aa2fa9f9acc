"""Plausible wrong solutions for the labs of chapter 18 (see tests/mutants/__init__.py)."""

MUTANTS: dict[str, list[tuple[str, ...]]] = {
    "18.1": [
        ("every process's samples kept, not only the pid asked for",
         "        if key.pid != pid:\n            continue\n", ""),
        ("kernel frames left leaf first",
         "            frames += reversed(kernel)", "            frames += kernel"),
        ("kernel frames put under the user frames",
         "            frames += reversed(kernel)", "            frames[1:1] = reversed(kernel)"),
        ("the kernel stack walked with BPF_F_USER_STACK too",
         "key.kernel_stack_id = stacks.get_stackid(ctx, 0);",
         "key.kernel_stack_id = stacks.get_stackid(ctx, BPF_F_USER_STACK);"),
    ],
    "18.2": [
        ("departures kept per process, not per thread",
         "left.update(&prev, &l);", "u32 tgid = l.key.pid;\n        left.update(&tgid, &l);"),
        ("stacks taken when the thread comes back (they are the leaving task's)",
         "u64 *total = offcpu.lookup_or_try_init(&l->key, &zero);",
         "struct key_t here = {.pid = bpf_get_current_pid_tgid() >> 32};\n"
         "    here.user_stack_id = stacks.get_stackid(args, BPF_F_USER_STACK);\n"
         "    here.kernel_stack_id = stacks.get_stackid(args, 0);\n"
         "    u64 *total = offcpu.lookup_or_try_init(&here, &zero);"),
        ("time in microseconds",
         "u64 delta = now - l->ts;", "u64 delta = (now - l->ts) / 1000;"),
    ],
    "18.3": [
        ("a free subtracted from the stack of the code that frees",
         "    s64 *bytes = outstanding.lookup(&b->site);",
         "    struct site_t here = {.pid = bpf_get_current_pid_tgid() >> 32};\n"
         "    here.stack_id = stacks.get_stackid(ctx, BPF_F_USER_STACK);\n"
         "    s64 *bytes = outstanding.lookup(&here);"),
        ("blocks counted instead of bytes",
         "__sync_fetch_and_add(bytes, b.size);", "__sync_fetch_and_add(bytes, 1);"),
        ("the size read from the argument register at the return",
         "struct block_t b = {.size = *size};", "struct block_t b = {.size = PT_REGS_PARM1(ctx)};"),
    ],
}
