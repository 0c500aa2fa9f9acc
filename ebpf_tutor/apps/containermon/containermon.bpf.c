// containermon: what happens inside containers, from tracepoints only.
//
// A container is a cgroup: `containers` maps its id (bpf_get_current_cgroup_id)
// to its policy. Any event of a process outside those cgroups is dropped at
// once. Events reach user space through one ring buffer:
//   EV_EXEC     sched:sched_process_exec      (the new program's path)
//   EV_OPEN_W   syscalls:sys_enter_openat     (opened for writing: the path)
//   EV_CONNECT  syscalls:sys_enter_connect    (IPv4 address and port)
//   EV_ACCEPT   syscalls:sys_exit_accept(4)   (the new socket)
//   EV_DUP_SOCK sys_enter_dup2/dup3           (a socket copied onto fd 0, 1 or 2)
//   EV_UNSHARE, EV_SETNS, EV_MOUNT            (namespace / mount calls)
//   EV_KILLED   a shell exec killed with bpf_send_signal (policy POLICY_KILL_SHELL)
// The CPU time of each container process is summed at sched:sched_switch
// (`runtime`), with what is running now on each CPU in `oncpu`, so user
// space can see a process that never leaves its CPU.
// Optional tracepoints (dup2 is missing on arm64) are compiled in with HAS_*.
#define COMM_LEN 16
#define PATH_LEN 128

#define EV_EXEC 1
#define EV_OPEN_W 2
#define EV_CONNECT 3
#define EV_ACCEPT 4
#define EV_DUP_SOCK 5
#define EV_UNSHARE 6
#define EV_SETNS 7
#define EV_MOUNT 8
#define EV_KILLED 9

#define POLICY_WATCH 1
#define POLICY_KILL_SHELL 2

#define O_ACCMODE_ 3
#define O_CREAT_ 0100
#define O_TRUNC_ 01000
#define AF_INET_ 2

struct event_t {
    u64 ts;
    u64 cgroup;
    u64 arg0;          // flags, fd, address...
    u64 arg1;          // port, new fd...
    u32 pid;           // thread group id, as the host sees it
    u32 tid;
    u32 kind;
    u32 pad;
    char comm[COMM_LEN];
    char path[PATH_LEN];
};
struct sock_key_t { u32 tgid; u32 fd; };
struct oncpu_t { u64 start; u32 tid; u32 pad; };
struct comm_t { char c[COMM_LEN]; };
struct sockaddr_in4_t { u16 family; u16 port; u32 addr; };   // struct sockaddr_in's head

BPF_HASH(containers, u64, u32, 64);            // cgroup id -> policy bits
BPF_HASH(shells, struct comm_t, u8, 32);       // program names that are shells
BPF_HASH(sockets, struct sock_key_t, u8, 65536);
BPF_HASH(runtime, u32, u64, 65536);            // tgid -> ns on CPU (container processes)
BPF_PERCPU_ARRAY(oncpu, struct oncpu_t, 1);
BPF_ARRAY(lost, u64, 1);
BPF_RINGBUF_OUTPUT(events, 512);     // 2 MiB at 4 KiB pages

static __always_inline u32 *policy_of(u64 *cg) {
    *cg = bpf_get_current_cgroup_id();
    return containers.lookup(cg);
}

static __always_inline struct event_t *event(u32 kind, u64 cg) {
    struct event_t *e = events.ringbuf_reserve(sizeof(struct event_t));
    if (!e) {
        int zero = 0;
        u64 *n = lost.lookup(&zero);
        if (n)
            __sync_fetch_and_add(n, 1);
        return 0;
    }
    u64 id = bpf_get_current_pid_tgid();
    e->ts = bpf_ktime_get_ns();
    e->cgroup = cg;
    e->arg0 = 0;
    e->arg1 = 0;
    e->pid = id >> 32;
    e->tid = (u32)id;
    e->kind = kind;
    e->pad = 0;
    e->path[0] = 0;
    bpf_get_current_comm(&e->comm, sizeof(e->comm));
    return e;
}

TRACEPOINT_PROBE(sched, sched_process_exec) {
    u64 cg;
    u32 *policy = policy_of(&cg);
    if (!policy)
        return 0;
    u32 tgid = bpf_get_current_pid_tgid() >> 32;
    u64 zero = 0;
    runtime.lookup_or_try_init(&tgid, &zero);
    struct comm_t name = {};
    bpf_get_current_comm(&name.c, sizeof(name.c));   // already the new program's name
    u32 kind = EV_EXEC;
    if ((*policy & POLICY_KILL_SHELL) && shells.lookup(&name)) {
        bpf_send_signal(9);           // SIGKILL before the shell runs one instruction
        kind = EV_KILLED;
    }
    struct event_t *e = event(kind, cg);
    if (!e)
        return 0;
    unsigned short off = args->data_loc_filename & 0xFFFF;
    bpf_probe_read_kernel_str(&e->path, sizeof(e->path), (char *)args + off);
    events.ringbuf_submit(e, 0);
    return 0;
}

TRACEPOINT_PROBE(syscalls, sys_enter_openat) {
    u64 cg;
    if (!policy_of(&cg))
        return 0;
    int flags = args->flags;
    if ((flags & O_ACCMODE_) == 0 && !(flags & (O_CREAT_ | O_TRUNC_)))
        return 0;                     // read-only opens are not reported
    struct event_t *e = event(EV_OPEN_W, cg);
    if (!e)
        return 0;
    e->arg0 = flags;
    bpf_probe_read_user_str(&e->path, sizeof(e->path), args->filename);
    events.ringbuf_submit(e, 0);
    return 0;
}

TRACEPOINT_PROBE(syscalls, sys_enter_connect) {
    u64 cg;
    if (!policy_of(&cg))
        return 0;
    struct sockaddr_in4_t sa = {};
    bpf_probe_read_user(&sa, sizeof(sa), args->uservaddr);
    if (sa.family != AF_INET_)
        return 0;
    struct event_t *e = event(EV_CONNECT, cg);
    if (!e)
        return 0;
    e->arg0 = sa.addr;                // network order
    e->arg1 = ntohs(sa.port);
    events.ringbuf_submit(e, 0);
    return 0;
}

static __always_inline int remember_socket(long ret) {
    u64 cg;
    if (ret < 0 || !policy_of(&cg))
        return 0;
    struct sock_key_t k = {.tgid = bpf_get_current_pid_tgid() >> 32, .fd = (u32)ret};
    u8 one = 1;
    sockets.update(&k, &one);
    return 0;
}

TRACEPOINT_PROBE(syscalls, sys_exit_socket) { return remember_socket(args->ret); }

static __always_inline int accepted(long ret) {
    u64 cg;
    if (ret < 0 || !policy_of(&cg))
        return 0;
    remember_socket(ret);
    struct event_t *e = event(EV_ACCEPT, cg);
    if (!e)
        return 0;
    e->arg0 = ret;
    events.ringbuf_submit(e, 0);
    return 0;
}

#ifdef HAS_ACCEPT
TRACEPOINT_PROBE(syscalls, sys_exit_accept) { return accepted(args->ret); }
#endif
TRACEPOINT_PROBE(syscalls, sys_exit_accept4) { return accepted(args->ret); }

TRACEPOINT_PROBE(syscalls, sys_enter_close) {
    u64 cg;
    if (!policy_of(&cg))
        return 0;
    struct sock_key_t k = {.tgid = bpf_get_current_pid_tgid() >> 32, .fd = (u32)args->fd};
    sockets.delete(&k);
    return 0;
}

static __always_inline int duplicated(u32 oldfd, u32 newfd) {
    u64 cg;
    if (!policy_of(&cg))
        return 0;
    struct sock_key_t k = {.tgid = bpf_get_current_pid_tgid() >> 32, .fd = oldfd};
    if (!sockets.lookup(&k))
        return 0;
    struct sock_key_t to = {.tgid = k.tgid, .fd = newfd};
    u8 one = 1;
    sockets.update(&to, &one);        // the copy is a socket too (0>&1 after >&)
    if (newfd > 2)
        return 0;
    struct event_t *e = event(EV_DUP_SOCK, cg);
    if (!e)
        return 0;
    e->arg0 = oldfd;
    e->arg1 = newfd;
    events.ringbuf_submit(e, 0);
    return 0;
}

#ifdef HAS_DUP2
TRACEPOINT_PROBE(syscalls, sys_enter_dup2) { return duplicated(args->oldfd, args->newfd); }
#endif
TRACEPOINT_PROBE(syscalls, sys_enter_dup3) { return duplicated(args->oldfd, args->newfd); }

static __always_inline int ns_call(u32 kind, u64 a0, u64 a1) {
    u64 cg;
    if (!policy_of(&cg))
        return 0;
    struct event_t *e = event(kind, cg);
    if (!e)
        return 0;
    e->arg0 = a0;
    e->arg1 = a1;
    events.ringbuf_submit(e, 0);
    return 0;
}

TRACEPOINT_PROBE(syscalls, sys_enter_unshare) { return ns_call(EV_UNSHARE, args->unshare_flags, 0); }
TRACEPOINT_PROBE(syscalls, sys_enter_setns) { return ns_call(EV_SETNS, args->fd, args->flags); }
TRACEPOINT_PROBE(syscalls, sys_enter_mount) {
    u64 cg;
    if (!policy_of(&cg))
        return 0;
    struct event_t *e = event(EV_MOUNT, cg);
    if (!e)
        return 0;
    e->arg0 = args->flags;
    bpf_probe_read_user_str(&e->path, sizeof(e->path), args->dir_name);
    events.ringbuf_submit(e, 0);
    return 0;
}

TRACEPOINT_PROBE(sched, sched_switch) {
    // runs as `prev`: the current task is the one leaving the CPU
    int zero = 0;
    struct oncpu_t *cur = oncpu.lookup(&zero);
    if (!cur)
        return 0;
    u64 now = bpf_ktime_get_ns();
    u64 cg;
    if (cur->start && policy_of(&cg)) {
        u32 tgid = bpf_get_current_pid_tgid() >> 32;
        u64 d = now - cur->start;
        u64 *t = runtime.lookup(&tgid);
        if (t)
            __sync_fetch_and_add(t, d);
        else
            runtime.update(&tgid, &d);
    }
    cur->start = now;
    cur->tid = args->next_pid;        // a thread id: user space finds its process
    return 0;
}

TRACEPOINT_PROBE(sched, sched_process_exit) {
    u64 id = bpf_get_current_pid_tgid();
    if ((u32)id != (id >> 32))
        return 0;                     // a thread, not the whole process
    u32 tgid = id >> 32;
    runtime.delete(&tgid);
    return 0;
}

// cgroup/connect4 on a container's cgroup: refuse IPv4 connections to the
// ports in `deny_ports` (the caller gets EPERM); `refused` counts them.
BPF_HASH(deny_ports, u16, u8, 64);
BPF_HASH(refused, u16, u64, 64);

int deny_connect4(struct bpf_sock_addr *ctx) {
    u16 port = ntohs(ctx->user_port);
    if (!deny_ports.lookup(&port))
        return 1;
    u64 zero = 0, *n = refused.lookup_or_try_init(&port, &zero);
    if (n)
        __sync_fetch_and_add(n, 1);
    return 0;
}
