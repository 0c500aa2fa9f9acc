# ---
# jupyter:
#   kernelspec:
#     display_name: eBPF (root)
#     language: python
#     name: ebpf-root
# ---

# %% [markdown]
# # Lab 1.2: What can this kernel do? System info from Python
#
# **Objective.** Write `system_info(root)`, a function that reads from files
# alone what an eBPF developer first wants to know about a machine: kernel
# release, BTF, the JIT, whether unprivileged BPF is allowed, which BPF
# capabilities you hold, and a few build options.
#
# **Expected observation.** The check calls your function on this machine
# and on three made-up `/proc` and `/sys` trees it builds in a temporary
# folder (so a hard-coded answer cannot pass). Every field must match.
#
# Everything lives under `root`: read `<root>/proc/...`, never `/proc/...`.

# %% [markdown]
# ## Where each fact lives
#
# | key | file under `root` | value |
# |---|---|---|
# | `kernel_release` | `proc/sys/kernel/osrelease` | the text, stripped |
# | `btf` | `sys/kernel/btf/vmlinux` | `True` if the file exists |
# | `jit_enabled` | `proc/sys/net/core/bpf_jit_enable` | an `int` (0, 1, or 2 = JIT with debug output) |
# | `unprivileged_bpf_disabled` | `proc/sys/kernel/unprivileged_bpf_disabled` | an `int` |
# | `bpf_caps` | the `CapEff:` line of `proc/self/status` | sorted names among `CAP_BPF` (bit 39), `CAP_PERFMON` (38), `CAP_SYS_ADMIN` (21), `CAP_NET_ADMIN` (12) |
# | `config` | `proc/config.gz` (gzip text) | for each of `CONFIG_KEYS`: `"y"`, `"m"`, a value, or `None` when unset or absent |
#
# `CapEff` is a hexadecimal bit mask: capability number *n* is held when bit
# *n* is set.

# %%
import gzip
import re
from pathlib import Path

from ebpf_tutor.labs import check

CONFIG_KEYS = ["CONFIG_BPF_SYSCALL", "CONFIG_BPF_JIT", "CONFIG_DEBUG_INFO_BTF",
               "CONFIG_KPROBES", "CONFIG_BPF_LSM"]
CAP_BITS = {"CAP_NET_ADMIN": 12, "CAP_SYS_ADMIN": 21, "CAP_PERFMON": 38, "CAP_BPF": 39}


# %% tags=["answer"]
def system_info(root: str = "/") -> dict:
    r = Path(root)
    # TODO: fill in every key of the table above, reading only files under r
    # BEGIN SOLUTION
    status = (r / "proc/self/status").read_text()
    cap_eff = int(re.search(r"^CapEff:\s*([0-9a-fA-F]+)", status, re.M).group(1), 16)
    config_text = gzip.decompress((r / "proc/config.gz").read_bytes()).decode()
    config = dict(re.findall(r"^(CONFIG_\w+)=(.*)$", config_text, re.M))
    return {
        "kernel_release": (r / "proc/sys/kernel/osrelease").read_text().strip(),
        "btf": (r / "sys/kernel/btf/vmlinux").exists(),
        "jit_enabled": int((r / "proc/sys/net/core/bpf_jit_enable").read_text()),
        "unprivileged_bpf_disabled": int((r / "proc/sys/kernel/unprivileged_bpf_disabled").read_text()),
        "bpf_caps": sorted(name for name, bit in CAP_BITS.items() if cap_eff >> bit & 1),
        "config": {k: config.get(k) for k in CONFIG_KEYS},
    }
    # END SOLUTION


# %% [markdown]
# <details><summary>Hint 1 (click to open)</summary>
#
# `Path(root) / "proc/sys/kernel/osrelease"` builds the path; `.read_text()`
# reads it. For the capabilities, `re.search(r"^CapEff:\s*([0-9a-f]+)", text, re.M)`
# finds the mask and `int(..., 16)` turns it into a number.
# </details>
#
# <details><summary>Hint 2</summary>
#
# Bit *n* of a number `m` is set when `m >> n & 1` is 1. For the config,
# `gzip.decompress(path.read_bytes()).decode()` gives the text; a dict built
# from `re.findall(r"^(CONFIG_\w+)=(.*)$", text, re.M)` has the set options,
# and `.get(key)` gives `None` for the others ("is not set" lines do not
# match the pattern).
# </details>

# %% [markdown]
# ## Try it on this machine

# %% tags=["try"]
system_info("/")

# %% [markdown]
# ## Check

# %% tags=["check"]
check("1.2", system_info=system_info)
