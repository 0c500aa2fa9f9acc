// One object with a program for each attach kind the libbpf layer covers
// (tests/test_bpfobject.py).
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_endian.h>
#include <bpf/usdt.bpf.h>

const volatile __u32 target_tgid = 0;
const volatile long getppid_nr = -1;
const volatile __u16 blocked_port = 0;

__u64 tp_hits, tp_btf_hits, raw_tp_hits, uprobe_hits, usdt_hits, connect_denied;

struct {
    __uint(type, BPF_MAP_TYPE_RINGBUF);
    __uint(max_entries, 4096);
} events SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_HASH);
    __uint(max_entries, 16);
    __type(key, __u32);
    __type(value, __u64);
} table SEC(".maps");

static __always_inline int mine(void)
{
    return (bpf_get_current_pid_tgid() >> 32) == target_tgid;
}

SEC("tp/syscalls/sys_enter_getppid")
int on_tp(void *ctx)
{
    if (!mine())
        return 0;
    __sync_fetch_and_add(&tp_hits, 1);
    __u32 *e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
    if (e) {
        *e = target_tgid;
        bpf_ringbuf_submit(e, 0);
    }
    return 0;
}

SEC("tp_btf/sys_enter")
int BPF_PROG(on_tp_btf, struct pt_regs *regs, long id)
{
    if (mine() && id == getppid_nr)
        __sync_fetch_and_add(&tp_btf_hits, 1);
    return 0;
}

SEC("raw_tp/sys_enter")
int on_raw_tp(struct bpf_raw_tracepoint_args *ctx)
{
    if (mine() && ctx->args[1] == getppid_nr)
        __sync_fetch_and_add(&raw_tp_hits, 1);
    return 0;
}

SEC("uprobe")
int on_uprobe(struct pt_regs *ctx)
{
    __sync_fetch_and_add(&uprobe_hits, 1);
    return 0;
}

SEC("usdt")
int on_usdt(struct pt_regs *ctx)
{
    __sync_fetch_and_add(&usdt_hits, 1);
    return 0;
}

SEC("cgroup/connect4")
int on_connect4(struct bpf_sock_addr *ctx)
{
    if (bpf_ntohs(ctx->user_port) == blocked_port) {
        __sync_fetch_and_add(&connect_denied, 1);
        return 0;
    }
    return 1;
}

SEC("xdp")
int on_xdp(struct xdp_md *ctx)
{
    unsigned char *data = (void *)(long)ctx->data, *end = (void *)(long)ctx->data_end;
    if (data + 1 > end)
        return XDP_ABORTED;
    return data[0] == 0xff ? XDP_DROP : XDP_PASS;
}

char LICENSE[] SEC("license") = "GPL";
