// procinfo.bpf.c: what the kernel knows about the process that calls getppid().
// Compiled once against vmlinux.h; libbpf fixes its offsets on every kernel.
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>

const volatile __u32 target_tgid = 0;   /* .rodata: set before load */

__u32 seen_pid, seen_tgid, seen_ppid;    /* .bss: read after the event */
__u32 calls;
char seen_comm[16];

SEC("tp/syscalls/sys_enter_getppid")
int on_getppid(void *ctx)
{
    struct task_struct *task = (struct task_struct *)bpf_get_current_task();
    __u32 tgid = BPF_CORE_READ(task, tgid);

    if (tgid != target_tgid)
        return 0;
    seen_pid = BPF_CORE_READ(task, pid);
    seen_tgid = tgid;
    seen_ppid = BPF_CORE_READ(task, real_parent, tgid);
    BPF_CORE_READ_STR_INTO(&seen_comm, task, comm);
    __sync_fetch_and_add(&calls, 1);
    return 0;
}

char LICENSE[] SEC("license") = "GPL";
