# ---
# jupyter:
#   kernelspec:
#     display_name: eBPF (root)
#     language: python
#     name: ebpf-root
# ---

# %% [markdown]
# # Lab 1.3: The life of a BPF program
#
# **Objective.** Walk one program through its whole life and prove each
# step from the outside, with `bpftool`: load it, attach it, see it in the
# kernel's list, watch it run, unload it, and prove it is gone.
#
# **Expected observation.** The check hands `lifecycle()` a program with a
# fresh name and a number of calls, `times` (a different one on every run).
# Your function returns the program's kernel `id` and `tag` as `bpftool`
# reports them, the number of times it ran (exactly `times`), and
# `gone=True`. The check then verifies all of it itself: the tag is the real
# one, and nothing with that name or id is still loaded.

# %% [markdown]
# ## Background
#
# * `Program(source)` compiles the C text and loads nothing yet; functions are
#   loaded when they are attached (`attach_tracepoint(tp=..., fn_name=...)`).
# * `bpftool -j prog show` prints every loaded program as JSON: `id`, `name`
#   (the function name, up to 15 characters), `tag` (a hash of the
#   instructions) and more.
# * `prog.close()` detaches and unloads: the kernel frees a program once no
#   file descriptor, link or pin refers to it any more.
# * `bpftool prog show id N` exits non-zero when there is no program N.

# %%
import json
import os
import subprocess

from ebpf_tutor import Program
from ebpf_tutor.labs import check


def bpftool_json(*args: str):
    out = subprocess.run(["bpftool", "-j", *args], capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


# %% tags=["answer"]
def lifecycle(source: str, fn_name: str, times: int) -> dict:
    """Load `source`, attach `fn_name` to syscalls:sys_enter_getppid, find it
    with bpftool, trigger it `times` times, read hits[0], close it, prove it gone."""
    # TODO 1: load the program and attach fn_name to the tracepoint
    # TODO 2: find it in bpftool's list by name: remember its id and tag
    # TODO 3: call os.getppid() exactly `times` times, then read the map `hits` at index 0
    # TODO 4: close the program, then ask bpftool for that id again
    # BEGIN SOLUTION
    prog = Program(source)
    prog.attach_tracepoint(tp="syscalls:sys_enter_getppid", fn_name=fn_name)
    mine = next(p for p in bpftool_json("prog", "show") if p.get("name") == fn_name)
    for _ in range(times):
        os.getppid()
    hits = prog["hits"][0].value
    prog.close()
    gone = subprocess.run(["bpftool", "prog", "show", "id", str(mine["id"])],
                          capture_output=True).returncode != 0
    return {"id": mine["id"], "tag": mine["tag"], "hits": hits, "gone": gone}
    # END SOLUTION


# %% [markdown]
# <details><summary>Hint 1: the idea (click to open)</summary>
#
# Four steps, each proved from outside: the kernel lists every loaded
# program, so look yours up by name *while it is loaded*, remember what you
# need (you cannot ask for it afterwards), make the hook fire, read the map
# before you close anything, and look the id up once more after closing.
# Other programs are loaded too: never take "the first one" or "the last one".
# </details>
#
# <details><summary>Hint 2: the API</summary>
#
# * `Program(source)` compiles; `prog.attach_tracepoint(tp="category:name",
#   fn_name=...)` loads the function and attaches it.
# * `bpftool_json("prog", "show")` is a list of dicts with `"id"`, `"name"`,
#   `"tag"`.
# * `prog["hits"][0].value` reads slot 0 of the array map `hits` (a closed
#   program has no maps).
# * `subprocess.run(["bpftool", "prog", "show", "id", str(n)],
#   capture_output=True).returncode` is non-zero when there is no program `n`.
# </details>
#
# <details><summary>Hint 3: the code, nearly</summary>
#
# ```python
# prog = Program(source)
# prog.attach_tracepoint(tp="syscalls:sys_enter_getppid", fn_name=fn_name)
# mine = next(p for p in bpftool_json("prog", "show") if p.get("name") == fn_name)
# for _ in range(times):
#     os.getppid()
# hits = ...            # read the map here, before closing
# prog.close()
# gone = ...            # ask bpftool for mine["id"]
# ```
# </details>

# %% [markdown]
# ## Try it

# %% tags=["try"]
demo = """
BPF_ARRAY(hits, u64, 1);
int demo_lifecycle(void *ctx) { hits.increment(0); return 0; }
"""
lifecycle(demo, "demo_lifecycle", 5)

# %% [markdown]
# ## Check

# %% tags=["check"]
check("1.3", lifecycle=lifecycle)
