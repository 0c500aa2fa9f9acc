// Allocation tracking: uprobes on libc's malloc and free. Each live block is
// remembered with the stack that allocated it; `outstanding` holds, per
// stack, the bytes and blocks allocated and not yet freed.
#include <uapi/linux/ptrace.h>

struct site_t {
    u32 pid;
    int stack_id;
};
struct block_t {
    u64 size;
    struct site_t site;
};
struct addr_t {         // an address means something only in its own process
    u32 pid;
    u32 pad;
    u64 addr;
};
struct usage_t {
    s64 bytes;          // allocated minus freed
    s64 blocks;
    u64 allocs;         // malloc calls, freed or not
};
BPF_HASH(asked, u32, u64, MAX_KEYS);                    // thread id -> size passed to malloc
BPF_HASH(live, struct addr_t, struct block_t, MAX_BLOCKS);   // (pid, address) -> block
BPF_HASH(outstanding, struct site_t, struct usage_t, MAX_KEYS);
BPF_STACK_TRACE(stacks, MAX_STACKS);

int on_malloc(struct pt_regs *ctx) {
    u64 id = bpf_get_current_pid_tgid();
    if (!WANTED(id >> 32))
        return 0;
    u32 tid = id;
    u64 size = PT_REGS_PARM1(ctx);
    asked.update(&tid, &size);
    return 0;
}

int on_malloc_return(struct pt_regs *ctx) {
    u64 id = bpf_get_current_pid_tgid();
    u32 tid = id;
    u64 *size = asked.lookup(&tid);
    if (!size)
        return 0;
    struct block_t b = {.size = *size};
    asked.delete(&tid);
    struct addr_t addr = {.pid = id >> 32, .addr = PT_REGS_RC(ctx)};
    if (addr.addr == 0)
        return 0;
    // at the return, the walk starts in malloc's caller: the function we want
    b.site.pid = id >> 32;
    b.site.stack_id = stacks.get_stackid(ctx, BPF_F_USER_STACK);
    live.update(&addr, &b);
    struct usage_t zero = {};
    struct usage_t *u = outstanding.lookup_or_try_init(&b.site, &zero);
    if (u) {
        __sync_fetch_and_add(&u->bytes, b.size);
        __sync_fetch_and_add(&u->blocks, 1);
        __sync_fetch_and_add(&u->allocs, 1);
    }
    return 0;
}

int on_free(struct pt_regs *ctx) {
    struct addr_t addr = {.pid = bpf_get_current_pid_tgid() >> 32, .addr = PT_REGS_PARM1(ctx)};
    struct block_t *b = live.lookup(&addr);
    if (!b)
        return 0;                       // allocated before we attached, or not by malloc
    struct usage_t *u = outstanding.lookup(&b->site);
    if (u) {
        __sync_fetch_and_add(&u->bytes, -(s64)b->size);
        __sync_fetch_and_add(&u->blocks, -1);
    }
    live.delete(&addr);
    return 0;
}
