"""Chapter 18's profiler: on-CPU samples, off-CPU time, allocations, block I/O.

    ebpf-tutor profile oncpu -F 99 --duration 5 -p PID --folded
    ebpf-tutor profile offcpu -- sleep 1
    ebpf-tutor profile alloc -p PID --json
    ebpf-tutor profile io --duration 3

One module per concern: `probes` (the BPF C of each mode and how it is
loaded), `symbols` (stack ids to names), `fold` (folded stacks), `flamegraph`
(an SVG of them), `workloads` (the C programs with known profiles), `perf`
(Linux perf on the same workload), `cli`.
"""
