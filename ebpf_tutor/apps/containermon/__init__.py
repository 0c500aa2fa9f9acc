"""containermon (chapter 17): a container security monitor.

Modules: `containermon.bpf.c` + `monitor` (tracepoints per container, keyed
by cgroup id; bpf_send_signal and cgroup/connect4 enforcement), `rules`
(Falco-like detections and the CPU-burn rule), `incidents` (scripted attacks
and benign work), `cli` (`ebpf-tutor containermon`). The containers
themselves come from `ebpf_tutor.sandbox.container` (namespaces + a scratch
cgroup), so that the chapter's lab checks can make them too.
"""
