// On-CPU samples: a perf event fires FREQ times a second on each CPU; each
// firing counts the interrupted task's (process, user stack, kernel stack).
#include <uapi/linux/ptrace.h>

struct sample_t {
    u32 pid;
    int user_stack_id;      // < 0: no user stack (a kernel thread, or the walk failed)
    int kernel_stack_id;    // < 0: the sample hit user mode
    char comm[16];
};
BPF_HASH(counts, struct sample_t, u64, MAX_KEYS);
BPF_STACK_TRACE(stacks, MAX_STACKS);

int on_sample(void *ctx) {
    u32 pid = bpf_get_current_pid_tgid() >> 32;
    if (pid == 0 || !WANTED(pid))        // the idle task is not a process
        return 0;
    struct sample_t key = {.pid = pid};
    key.user_stack_id = stacks.get_stackid(ctx, BPF_F_USER_STACK);
    key.kernel_stack_id = stacks.get_stackid(ctx, 0);
    bpf_get_current_comm(&key.comm, sizeof(key.comm));
    counts.atomic_increment(key);
    return 0;
}
