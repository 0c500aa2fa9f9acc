"""containermon (chapter 17): a container security monitor.

Modules: `container` (+ `container_init.py`: containers made of namespaces
and a scratch cgroup), `containermon.bpf.c` + `monitor` (tracepoints per
container, keyed by cgroup id; bpf_send_signal and cgroup/connect4
enforcement), `rules` (Falco-like detections and the CPU-burn rule),
`incidents` (scripted attacks and benign work), `cli` (`ebpf-tutor containermon`).
"""
