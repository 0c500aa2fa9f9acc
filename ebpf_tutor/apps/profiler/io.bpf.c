// Block I/O latency: from block:block_rq_issue (the request goes to the
// driver) to block:block_rq_complete, per device, as a log2 histogram in
// microseconds. A request is named by {dev, sector} at both ends.
struct req_t {
    u32 dev;
    u32 pad;
    u64 sector;
};
struct slot_t {
    u32 dev;
    u32 slot;
};
BPF_HASH(issued, struct req_t, u64, MAX_KEYS);
BPF_HASH(dist, struct slot_t, u64, 4096);

TRACEPOINT_PROBE(block, block_rq_issue) {
    struct req_t key = {.dev = args->dev, .sector = args->sector};
    u64 ts = bpf_ktime_get_ns();
    issued.update(&key, &ts);
    return 0;
}

TRACEPOINT_PROBE(block, block_rq_complete) {
    struct req_t key = {.dev = args->dev, .sector = args->sector};
    u64 *ts = issued.lookup(&key);
    if (!ts)
        return 0;
    u64 us = (bpf_ktime_get_ns() - *ts) / 1000;
    struct slot_t s = {.dev = args->dev, .slot = bpf_log2l(us)};
    u64 zero = 0;
    u64 *n = dist.lookup_or_try_init(&s, &zero);
    if (n)
        __sync_fetch_and_add(n, 1);
    issued.delete(&key);
    return 0;
}
