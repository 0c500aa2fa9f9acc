# ---
# jupyter:
#   kernelspec:
#     display_name: eBPF (root)
#     language: python
#     name: ebpf-root
# ---

# %% [markdown]
# # Lab 9.3: An application sandbox
#
# **Objective.** Confine an application with three cgroup programs that
# work together, the way container runtimes do: a **device** program that
# keeps it away from some character devices, `sock_addr` programs that
# keep it away from some ports (TCP and UDP, IPv4 and IPv6), and a
# **sysctl** program that keeps it from reading or changing some kernel
# settings. What is forbidden is data, in three maps, so the same programs
# serve any policy.
#
# **Expected observation.** The check draws a forbidden device (`/dev/zero`
# or `/dev/full`), a forbidden port, and a forbidden sysctl
# (`kernel/hostname` or `kernel/domainname`), fills your maps, and calls
# your `attach_sandbox`. A process **inside** the sandbox then gets `EPERM`
# when it opens or `mknod`s the forbidden device; when it connects to the
# forbidden port over TCP, at `127.0.0.1`, at `::1` or from an IPv6 socket
# at `::ffff:127.0.0.1`; when it sends a UDP datagram to that port with
# `sendto()`, at `127.0.0.1` or `::1`; and when it reads or writes the
# forbidden sysctl. The other device, `/dev/null`, another port (TCP over
# both families, UDP) and the other sysctl work. A process **outside** does
# all seventeen actions without a single error. (The sysctl writes happen
# in a private UTS namespace, so the machine's own host name never changes.)
#
# **You will use:** `struct bpf_cgroup_dev_ctx`, `struct bpf_sock_addr`,
# `struct bpf_sysctl` with `bpf_sysctl_get_name`, and `ScratchCgroup.attach`.

# %% [markdown]
# ## Background
#
# * A **device** program (`BPF_PROG_TYPE_CGROUP_DEVICE`, hook `"device"`)
#   runs when a process of the cgroup opens a device node or creates one
#   with `mknod`. `ctx->access_type` packs two things: the low 16 bits are
#   the device type (`BPF_DEVCG_DEV_CHAR` or `BPF_DEVCG_DEV_BLOCK`), the high
#   16 bits how it is accessed (`BPF_DEVCG_ACC_READ`, `_WRITE`, `_MKNOD`).
#   `ctx->major` and `ctx->minor` name the device (`ls -l /dev/zero` shows
#   `1, 5`). Return `0` to refuse (`EPERM`), `1` to allow. This is what
#   cgroup v2 offers in place of v1's `devices.allow`/`devices.deny` files:
#   systemd and container runtimes install exactly such a program.
# * A **sysctl** program (`BPF_PROG_TYPE_CGROUP_SYSCTL`, hook `"sysctl"`)
#   runs on every read and write of a file under `/proc/sys`.
#   `bpf_sysctl_get_name(ctx, buf, size, 0)` writes the full name, such as
#   `kernel/hostname`; with the flag `BPF_F_SYSCTL_BASE_NAME` you would get
#   only `hostname`. `ctx->write` is 1 for a write.
# * The port rule needs four `sock_addr` hooks, because a forbidden port can
#   be reached four ways: `connect4` (TCP or UDP `connect()` on an IPv4
#   socket), `connect6` (an IPv6 socket, to a real IPv6 address or a
#   v4-mapped `::ffff:a.b.c.d`), `sendmsg4` and `sendmsg6` (a UDP `sendto()`
#   that names its destination, which never calls `connect()`). The port is
#   in `ctx->user_port` in all four (Chapter 9, "The side doors").

# %%
import subprocess

from ebpf_tutor import Program
from ebpf_tutor.sandbox.cgroup import ScratchCgroup
from ebpf_tutor.labs import check

# %% [markdown]
# ## Your program
#
# The maps and their key types are given; the check (or you, in *Try it*)
# fills them. A `struct sysctl_key` holds the name padded with zero bytes,
# which is exactly what `bpf_sysctl_get_name` leaves in a zeroed key.

# %% tags=["answer"]
PROGRAM = r"""
struct dev_key { u32 major; u32 minor; };
struct sysctl_key { char name[64]; };
BPF_HASH(deny_dev, struct dev_key, u8);         /* character devices the app may not use */
BPF_HASH(deny_port, u16, u8);                   /* ports it may not reach (host order) */
BPF_HASH(deny_sysctl, struct sysctl_key, u8);   /* sysctls it may not read nor write */

int sandbox_device(struct bpf_cgroup_dev_ctx *ctx) {
    u32 type = ctx->access_type & 0xFFFF;       /* BPF_DEVCG_DEV_CHAR or BPF_DEVCG_DEV_BLOCK */
    // TODO 1: for a character device whose {major, minor} is in deny_dev, return 0
    // BEGIN SOLUTION
    struct dev_key key = {ctx->major, ctx->minor};
    if (type == BPF_DEVCG_DEV_CHAR && deny_dev.lookup(&key))
        return 0;
    // END SOLUTION
    return 1;
}

static __always_inline int port_allowed(struct bpf_sock_addr *ctx) {
    // TODO 2: refuse (return 0) a destination port that is in deny_port
    // BEGIN SOLUTION
    u16 port = ntohs(ctx->user_port);
    if (deny_port.lookup(&port))
        return 0;
    // END SOLUTION
    return 1;
}

/* BCC loads a function for one hook only: one small function per hook */
int sandbox_connect(struct bpf_sock_addr *ctx)  { return port_allowed(ctx); }  /* connect4 */
int sandbox_connect6(struct bpf_sock_addr *ctx) { return port_allowed(ctx); }  /* connect6 */
int sandbox_sendmsg(struct bpf_sock_addr *ctx)  { return port_allowed(ctx); }  /* sendmsg4 */
int sandbox_sendmsg6(struct bpf_sock_addr *ctx) { return port_allowed(ctx); }  /* sendmsg6 */

int sandbox_sysctl(struct bpf_sysctl *ctx) {
    struct sysctl_key key = {};
    // TODO 3: put the full name of the sysctl ("kernel/hostname") into key.name,
    //         and refuse (return 0) both reads and writes of a name in deny_sysctl
    // BEGIN SOLUTION
    if (bpf_sysctl_get_name(ctx, key.name, sizeof(key.name), 0) < 0)
        return 1;
    if (deny_sysctl.lookup(&key))
        return 0;
    // END SOLUTION
    return 1;
}
"""


# %% tags=["answer"]
def attach_sandbox(prog: Program, cg: ScratchCgroup) -> None:
    """Attach the six functions to their hooks of `cg`."""
    # TODO 4: six calls to cg.attach(prog, "<function>", "<hook>"); the hooks are
    #         device, connect4, connect6, sendmsg4, sendmsg6 and sysctl
    # BEGIN SOLUTION
    cg.attach(prog, "sandbox_device", "device")
    cg.attach(prog, "sandbox_connect", "connect4")
    cg.attach(prog, "sandbox_connect6", "connect6")
    cg.attach(prog, "sandbox_sendmsg", "sendmsg4")
    cg.attach(prog, "sandbox_sendmsg6", "sendmsg6")
    cg.attach(prog, "sandbox_sysctl", "sysctl")
    # END SOLUTION


# %% [markdown]
# <details><summary>Hint 1: the idea (click to open)</summary>
#
# Each program builds the key its map is indexed by from its context, and
# refuses (returns 0) when the key is in the map, allows (1) otherwise.
# A forbidden device is forbidden whatever the access (read, write,
# `mknod`); a forbidden sysctl for reading and writing. A forbidden port
# can be reached four ways: `connect()` on an IPv4 socket, `connect()` on
# an IPv6 socket (to `::1`, or to `::ffff:127.0.0.1`, IPv4 in disguise),
# and `sendto()` of a UDP datagram on either; each way has its own hook,
# and one rule serves them all.
# </details>
#
# <details><summary>Hint 2: the API</summary>
#
# * Device: `ctx->major`, `ctx->minor`; `ctx->access_type & 0xFFFF` is the
#   type (`BPF_DEVCG_DEV_CHAR`).
# * Sysctl: `bpf_sysctl_get_name(ctx, key.name, sizeof(key.name), 0)` writes
#   the full name ("kernel/hostname"; the flag `BPF_F_SYSCTL_BASE_NAME`
#   would give only "hostname") and returns < 0 on error. Do not test
#   `ctx->write`: reads are forbidden too.
# * Port: `ntohs(ctx->user_port)`, in all four `sock_addr` hooks.
# * Hooks: `"device"`, `"connect4"`, `"connect6"`, `"sendmsg4"`,
#   `"sendmsg6"`, `"sysctl"`.
# </details>
#
# <details><summary>Hint 3: the code, nearly</summary>
#
# ```c
# struct dev_key key = {ctx->major, ctx->minor};
# if (type == BPF_DEVCG_DEV_CHAR && deny_dev.lookup(&key)) return 0;
# ...
# if (bpf_sysctl_get_name(ctx, key.name, sizeof(key.name), 0) < 0) return 1;
# if (deny_sysctl.lookup(&key)) return 0;
# ```
# Leave out `connect6` and an IPv6 socket walks around the rule, even to an
# IPv4 address; leave out `sendmsg4` and a UDP `sendto()` does.
# </details>

# %% [markdown]
# ## Try it
#
# Forbid `/dev/zero` and `kernel/hostname`, then let the same little shell
# script run inside the sandbox and outside it.

# %% tags=["try"]
SCRIPT = "head -c 4 /dev/zero | wc -c; cat /proc/sys/kernel/hostname >/dev/null && echo hostname readable"

with ScratchCgroup("try93") as cg, Program(PROGRAM) as prog:
    prog["deny_dev"][prog["deny_dev"].Key(1, 5)] = prog["deny_dev"].Leaf(1)
    key = prog["deny_sysctl"].Key()
    key.name = b"kernel/hostname"
    prog["deny_sysctl"][key] = prog["deny_sysctl"].Leaf(1)
    attach_sandbox(prog, cg)
    inside = cg.run(["sh", "-c", SCRIPT])
    outside = subprocess.run(["sh", "-c", SCRIPT], capture_output=True, text=True)
print("inside: ", inside.stdout.split("\n"), inside.stderr.strip().splitlines())
print("outside:", outside.stdout.split("\n"), outside.stderr.strip().splitlines())

# %% [markdown]
# ## Check

# %% tags=["check"]
check("9.3", program=PROGRAM, attach_sandbox=attach_sandbox)
