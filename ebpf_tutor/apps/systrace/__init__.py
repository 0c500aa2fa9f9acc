"""systrace (chapter 15): an strace-like system call tracer.

Modules: `syscalls` (numbers to names for this arch), `decode` (arguments,
flags and errno names as strace writes them), `systrace.bpf.c` + `probes`
(the BPF program, its filters, a command started stopped), `session` (one
trace from start to end, events through the ring-buffer consumer),
`report` (lines, JSON, the -c table), `cli` (`ebpf-tutor systrace`).
"""
