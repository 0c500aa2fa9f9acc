/* ebpf-tutor compatibility include, forced into every BCC compile
 * (cflags -include). BCC 0.26 ships an older uapi <linux/bpf.h> than the
 * kernels it now meets; the newer kernel's own headers (net/sock.h,
 * linux/tcp.h, linux/netdevice.h ...) refer to a few types and constants
 * that old uapi lacks. They are declared here with the sizes the 6.x uapi
 * gives them. Every definition is guarded, so newer BCCs are unaffected. */
#ifndef EBPF_TUTOR_COMPAT_H
#define EBPF_TUTOR_COMPAT_H
#include <linux/types.h>

#ifndef BPF_LOAD_ACQ
/* Pre-6.15 uapi: the opaque kernel-object handles did not exist yet. */
struct bpf_wq { __u64 __opaque[2]; } __attribute__((aligned(8)));
struct bpf_rb_root { __u64 __opaque[2]; } __attribute__((aligned(8)));
struct bpf_rb_node { __u64 __opaque[4]; } __attribute__((aligned(8)));
struct bpf_refcount { __u32 __opaque[1]; } __attribute__((aligned(4)));
struct bpf_task_work { __u64 __opaque; } __attribute__((aligned(8)));
#define BPF_LOAD_ACQ 0x100
#define BPF_STORE_REL 0x110
#endif

#ifndef BPF_ADDR_SPACE_CAST
#define BPF_ADDR_SPACE_CAST 1
#endif
#ifndef BPF_CGROUP_UNIX_CONNECT
#define BPF_CGROUP_UNIX_CONNECT 49
#define BPF_CGROUP_UNIX_SENDMSG 50
#define BPF_CGROUP_UNIX_RECVMSG 51
#define BPF_CGROUP_UNIX_GETPEERNAME 52
#define BPF_CGROUP_UNIX_GETSOCKNAME 53
#endif

#endif /* EBPF_TUTOR_COMPAT_H */
