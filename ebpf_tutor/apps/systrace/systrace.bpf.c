// systrace: every system call of the chosen processes, from two tracepoints.
//
// raw_syscalls:sys_enter remembers (per thread) the call number, its six raw
// arguments and the time; raw_syscalls:sys_exit finds that entry and either
// adds the call to an in-kernel summary (SUMMARY: nothing per call reaches
// user space) or sends one event with the return value and the latency
// through the ring buffer. Which processes: compile-time switches, so a run
// pays only for the filters it asked for.
//   FILTER_PID     the process must be in `pids` (FOLLOW_FORK adds children)
//   FILTER_TGID    the process id must equal this constant (one pid, no children)
//   FILTER_COMM    its name must equal `comm_filter[0]`
//   FILTER_CGROUP  bpf_get_current_cgroup_id() must equal FILTER_CGROUP
//   FILTER_NR      the call number must be in `only`
// SUMMARY with NO_LATENCY counts at sys_exit alone (no entry probe, no
// per-thread state), like BCC's syscount without -L.
#define COMM_LEN 16
#ifndef PATH_LEN
#define PATH_LEN 128
#endif
#define PATH_AT_ENTER 0x80   // path_arg flag: read the path at entry (execve)

struct comm_t { char c[COMM_LEN]; };
#ifdef SUMMARY
struct start_t {
    u64 ts;                // the exit knows the call number (args->id)
};
#else
struct start_t {
    u64 ts;
    u64 args[6];
    u32 nr;
    u32 path_ok;
    char path[PATH_LEN];
};
#endif
struct stat_t {
    u64 calls;
    u64 errors;
    u64 total_ns;
    u64 max_ns;
};
struct event_t {
    u64 ts;
    u64 lat_ns;
    s64 ret;
    u64 args[6];
    u32 pid;
    u32 tid;
    u32 nr;
    u32 cpu;
    char comm[COMM_LEN];
    char path[PATH_LEN];
};

#ifdef START_IN_TASK
// the call in progress lives in the thread's own task storage: no hash
// lookup by thread id, and the kernel frees it when the thread exits
BPF_TASK_STORAGE(start_task, struct start_t);
#define CURRENT_TASK ((struct task_struct *)bpf_get_current_task_btf())
#else
BPF_HASH(start, u32, struct start_t, 65536);
#endif
BPF_HASH(pids, u32, u8, 65536);
BPF_ARRAY(comm_filter, struct comm_t, 1);
BPF_HASH(only, u32, u8, 1024);
BPF_HASH(path_arg, u32, u8, 256);      // nr -> index of its path argument (| PATH_AT_ENTER)
BPF_ARRAY(lost, u64, 1);
#ifdef SUMMARY
BPF_PERCPU_HASH(stats, u32, struct stat_t, 1024);   // per CPU: no atomics, summed by user space
#else
BPF_RINGBUF_OUTPUT(events, RING_PAGES);
#endif

static __always_inline int wanted(u32 tgid, u32 nr) {
#ifdef FILTER_TGID
    if (tgid != FILTER_TGID)
        return 0;
#endif
#ifdef FILTER_PID
    if (!pids.lookup(&tgid))
        return 0;
#endif
#ifdef FILTER_CGROUP
    if (bpf_get_current_cgroup_id() != FILTER_CGROUP)
        return 0;
#endif
#ifdef FILTER_COMM
    int zero = 0;
    struct comm_t *want = comm_filter.lookup(&zero);
    if (!want)
        return 0;
    char comm[COMM_LEN] = {};
    bpf_get_current_comm(&comm, sizeof(comm));
    #pragma unroll
    for (int i = 0; i < COMM_LEN; i++) {
        if (comm[i] != want->c[i])
            return 0;
        if (comm[i] == 0)
            break;
    }
#endif
#ifdef FILTER_NR
    if (!only.lookup(&nr))
        return 0;
#endif
    return 1;
}

#ifndef NO_LATENCY
TRACEPOINT_PROBE(raw_syscalls, sys_enter) {
    u64 id = bpf_get_current_pid_tgid();
    u32 tgid = id >> 32, tid = (u32)id, nr = args->id;
    if (!wanted(tgid, nr))
        return 0;
    struct start_t s = {};
#ifndef SUMMARY
    s.nr = nr;
    #pragma unroll
    for (int i = 0; i < 6; i++)
        s.args[i] = args->args[i];
    u8 *pa = path_arg.lookup(&nr);
    if (pa && (*pa & PATH_AT_ENTER)) {
        // execve replaces the memory the path lives in: read it now
        u32 idx = *pa & 7;
        if (idx < 6)
            s.path_ok = bpf_probe_read_user_str(s.path, sizeof(s.path),
                                                (void *)s.args[idx]) > 0;
    }
#endif
    s.ts = bpf_ktime_get_ns();
#ifdef START_IN_TASK
    struct start_t *slot = start_task.task_storage_get(CURRENT_TASK, 0,
                                                       BPF_LOCAL_STORAGE_GET_F_CREATE);
    if (slot)
        *slot = s;
#else
    start.update(&tid, &s);
#endif
    return 0;
}
#endif

#ifdef FOLLOW_FORK
TRACEPOINT_PROBE(sched, sched_process_fork) {
    // runs in the parent, before the child can run: no call of it is missed
    u32 parent = args->parent_pid, child = args->child_pid;
    u8 one = 1;
    if (pids.lookup(&parent))
        pids.update(&child, &one);
    return 0;
}
#endif

TRACEPOINT_PROBE(raw_syscalls, sys_exit) {
    u64 id = bpf_get_current_pid_tgid();
    u32 tid = (u32)id;
    s64 ret = args->ret;
#ifdef NO_LATENCY
    u32 nr = args->id;
    if (!wanted(id >> 32, nr))
        return 0;
    // a new process or thread also "returns" from fork/clone (with 0), a call
    // it never made: the parent's return is the one to count
    if (ret == 0 && (nr == NR_CLONE || nr == NR_CLONE3 || nr == NR_FORK || nr == NR_VFORK))
        return 0;
    u64 lat = 0;
#else
    u64 now = bpf_ktime_get_ns();
#ifdef START_IN_TASK
    struct start_t *s = start_task.task_storage_get(CURRENT_TASK, 0, 0);
#else
    struct start_t *s = start.lookup(&tid);
#endif
    if (!s || !s->ts)
        return 0;            // its entry was not traced (or came before we attached)
    u64 lat = now - s->ts;
#endif
#ifdef SUMMARY
#ifndef NO_LATENCY
    u32 nr = args->id;
#endif
    struct stat_t zero = {};
    struct stat_t *st = stats.lookup_or_try_init(&nr, &zero);
    if (st) {                // this CPU's own copy: plain additions are safe
        st->calls++;
        if (ret < 0 && ret >= -4095)
            st->errors++;
        st->total_ns += lat;
        if (lat > st->max_ns)
            st->max_ns = lat;
    }
#else
    struct event_t *e = events.ringbuf_reserve(sizeof(struct event_t));
    if (!e) {
        int zero = 0;
        u64 *n = lost.lookup(&zero);
        if (n)
            __sync_fetch_and_add(n, 1);
        s->ts = 0;
        return 0;
    }
    e->ts = s->ts;
    e->lat_ns = lat;
    e->ret = ret;
    #pragma unroll
    for (int i = 0; i < 6; i++)
        e->args[i] = s->args[i];
    e->pid = id >> 32;
    e->tid = tid;
    e->nr = s->nr;
    e->cpu = bpf_get_smp_processor_id();
    bpf_get_current_comm(&e->comm, sizeof(e->comm));
    e->path[0] = 0;
    u32 nr = s->nr;
    u8 *pa = path_arg.lookup(&nr);
    if (pa) {
        if (*pa & PATH_AT_ENTER) {
            if (s->path_ok)
                bpf_probe_read_kernel_str(e->path, sizeof(e->path), s->path);
        } else {
            // after the call: the kernel has faulted the string in for us
            u32 idx = *pa & 7;
            if (idx < 6)
                bpf_probe_read_user_str(e->path, sizeof(e->path), (void *)s->args[idx]);
        }
    }
    events.ringbuf_submit(e, 0);
#endif
#ifndef NO_LATENCY
    // mark the entry used rather than delete it: a write to memory we hold
    // instead of a hash operation per call (sched_process_exit deletes it)
    s->ts = 0;
#endif
    return 0;
}

#if !defined(NO_LATENCY) && !defined(START_IN_TASK)
TRACEPOINT_PROBE(sched, sched_process_exit) {
    u32 tid = (u32)bpf_get_current_pid_tgid();     // runs for each exiting thread
    start.delete(&tid);
    return 0;
}
#endif
