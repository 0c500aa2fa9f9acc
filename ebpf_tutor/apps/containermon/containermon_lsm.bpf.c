// containermon's LSM refusal (kernels with BPF LSM, e.g. the course VM):
// an exec of a shell in a guarded container fails with EPERM in
// bprm_check_security, before the shell is loaded. The shells are named by
// inode (`shell_inodes`, filled by user space from the programs' paths);
// `lsm_denied` counts the refusals per cgroup id.
#include <linux/fs.h>
#include <linux/binfmts.h>
#include <linux/errno.h>

BPF_HASH(lsm_guarded, u64, u8, 64);
BPF_HASH(shell_inodes, u64, u8, 64);
BPF_HASH(lsm_denied, u64, u64, 64);

LSM_PROBE(bprm_check_security, struct linux_binprm *bprm, int ret) {
    if (ret)
        return ret;                   // another module refused already
    u64 cg = bpf_get_current_cgroup_id();
    if (!lsm_guarded.lookup(&cg))
        return 0;
    u64 ino = bprm->file->f_inode->i_ino;
    if (!shell_inodes.lookup(&ino))
        return 0;
    u64 zero = 0, *n = lsm_denied.lookup_or_try_init(&cg, &zero);
    if (n)
        __sync_fetch_and_add(n, 1);
    return -EPERM;
}
