// Off-CPU time: at each context switch, the task leaving the CPU (the
// current one) notes when it left and its stacks; when it comes back, the
// time it spent away is added to those stacks.
struct sample_t {
    u32 pid;
    int user_stack_id;
    int kernel_stack_id;
    char comm[16];
};
struct left_t {
    u64 ts;
    struct sample_t where;
};
BPF_HASH(left, u32, struct left_t, MAX_KEYS);           // thread id -> when and where it left
BPF_HASH(blocked, struct sample_t, u64, MAX_KEYS);      // stacks -> ns spent off the CPU
BPF_STACK_TRACE(stacks, MAX_STACKS);

TRACEPOINT_PROBE(sched, sched_switch) {
    u64 now = bpf_ktime_get_ns();
    u32 pid = bpf_get_current_pid_tgid() >> 32;         // the current task is prev
    u32 prev = args->prev_pid;
    if (prev != 0 && WANTED(pid)) {
        struct left_t l = {.ts = now};
        l.where.pid = pid;
        l.where.user_stack_id = stacks.get_stackid(args, BPF_F_USER_STACK);
        l.where.kernel_stack_id = stacks.get_stackid(args, 0);
        bpf_get_current_comm(&l.where.comm, sizeof(l.where.comm));
        left.update(&prev, &l);
    }
    u32 next = args->next_pid;
    struct left_t *back = left.lookup(&next);
    if (!back)
        return 0;
    u64 delta = now - back->ts;
    u64 zero = 0;
    u64 *total = blocked.lookup_or_try_init(&back->where, &zero);
    if (total)
        __sync_fetch_and_add(total, delta);
    left.delete(&next);
    return 0;
}
