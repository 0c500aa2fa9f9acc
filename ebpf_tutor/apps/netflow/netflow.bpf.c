/* netflow: a flow table of IPv4 5-tuples, protocol counters, port-scan and
 * flood detection per source, and 1-in-SAMPLE_RATE packet samples for a
 * pcap file. The same accounting runs at XDP (ingress only) and at TC
 * (clsact ingress and egress): `netflow_xdp`, `netflow_tc_in`, `netflow_tc_out`.
 *
 * Bytes are frame bytes: the Ethernet header and everything after it, no
 * FCS (what a packet socket, and so tshark, sees as the frame's length).
 *
 * Compile-time parameters (BCC cflags, -DNAME=value): MAX_FLOWS, SAMPLE_RATE
 * (0: no samples), SNAP_LEN, WINDOW_NS, SCAN_PORTS, FLOOD_PACKETS. */
#include <uapi/linux/if_ether.h>
#include <uapi/linux/ip.h>

#ifndef MAX_FLOWS
#define MAX_FLOWS 16384
#endif
#ifndef SAMPLE_RATE
#define SAMPLE_RATE 0
#endif
#ifndef SNAP_LEN
#define SNAP_LEN 128
#endif
#ifndef WINDOW_NS
#define WINDOW_NS 1000000000ULL
#endif
#ifndef SCAN_PORTS
#define SCAN_PORTS 20
#endif
#ifndef FLOOD_PACKETS
#define FLOOD_PACKETS 5000
#endif

#define PROTO_ICMP 1         /* IPv4 protocol numbers (<linux/in.h> costs a lot to compile) */
#define PROTO_TCP 6
#define PROTO_UDP 17
#define DIR_INGRESS 0
#define DIR_EGRESS 1
#define TCP_SYN 0x02
#define TCP_ACK 0x10

struct flow_key {            /* one direction of a conversation */
    u32 saddr;               /* network byte order, as on the wire */
    u32 daddr;
    u16 sport;               /* host byte order; 0 for ICMP and later fragments */
    u16 dport;
    u8 proto;                /* PROTO_TCP 6, UDP 17, ICMP 1, ... */
    u8 pad[3];
};
struct flow_val {
    u64 packets;
    u64 bytes;               /* frame bytes, Ethernet header included */
    u64 first_ns;            /* bpf_ktime_get_ns() of the first and last packet */
    u64 last_ns;
    u8 tcp_flags;            /* every TCP flag seen in this direction, ORed */
    u8 pad[7];
};
BPF_TABLE("lru_hash", struct flow_key, struct flow_val, flows, MAX_FLOWS);

struct proto_key { u16 ethertype; u8 proto; u8 pad; };   /* proto: IPv4's, else 0 */
struct counter { u64 packets; u64 bytes; };
BPF_HASH(protocols, struct proto_key, struct counter, 256);

/* --- detection: per source address, in windows of WINDOW_NS -------------- */
struct source {
    u64 window_start;
    u64 packets;             /* packets from this source in the window */
    u64 ports;               /* distinct (destination, port) it tried in the window */
    u32 scan_alerted;        /* one alert of each kind per window */
    u32 flood_alerted;
};
BPF_TABLE("lru_hash", u32, struct source, sources, 4096);
struct touch_key { u32 saddr; u32 daddr; u16 dport; u8 proto; u8 pad; };
BPF_TABLE("lru_hash", struct touch_key, u64, touched, 65536);   /* -> window it was tried in */

#define ALERT_SCAN 1
#define ALERT_FLOOD 2
struct alert { u64 ts_ns; u32 saddr; u32 kind; u64 value; u64 window_start; };
BPF_RINGBUF_OUTPUT(alerts, 8);

/* --- samples for the pcap file ------------------------------------------- */
struct sample {
    u64 ts_ns;
    u32 pkt_len;             /* the whole frame */
    u32 cap_len;             /* bytes in data: min(pkt_len, SNAP_LEN) */
    u32 ifindex;
    u32 direction;           /* DIR_INGRESS or DIR_EGRESS */
    u8 data[SNAP_LEN];
};
BPF_RINGBUF_OUTPUT(samples, 256);
#define CTR_SEEN 0           /* packets seen (numbers them for sampling) */
#define CTR_SAMPLE_LOST 1    /* samples that found the ring full */
#define CTR_ALERT_LOST 2
BPF_ARRAY(counters, u64, 4);

static __always_inline void count(int idx) {
    u64 *c = counters.lookup(&idx);
    if (c)
        __sync_fetch_and_add(c, 1);
}

/* Is this packet a new attempt to reach a port? TCP SYN without ACK, or any
 * UDP datagram. Replies of a server (SYN+ACK) are not attempts. */
static __always_inline int is_attempt(u8 proto, u8 tcp_flags) {
    if (proto == PROTO_TCP)
        return (tcp_flags & (TCP_SYN | TCP_ACK)) == TCP_SYN;
    return proto == PROTO_UDP;
}

static __always_inline void alert(u32 saddr, u32 kind, u64 value, u64 now, u64 window_start) {
    struct alert *a = alerts.ringbuf_reserve(sizeof(struct alert));
    if (!a) {
        count(CTR_ALERT_LOST);
        return;
    }
    a->ts_ns = now;
    a->saddr = saddr;
    a->kind = kind;
    a->value = value;
    a->window_start = window_start;
    alerts.ringbuf_submit(a, 0);
}

static __always_inline void detect(struct flow_key *k, u8 tcp_flags, u64 now) {
    struct source zero = {}, *s = sources.lookup_or_try_init(&k->saddr, &zero);
    if (!s)
        return;
    if (now - s->window_start > WINDOW_NS) {        /* a new window for this source */
        s->window_start = now;
        s->packets = 0;
        s->ports = 0;
        s->scan_alerted = 0;
        s->flood_alerted = 0;
    }
    u64 packets = __sync_fetch_and_add(&s->packets, 1) + 1;
    if (packets >= FLOOD_PACKETS && !s->flood_alerted) {
        s->flood_alerted = 1;
        alert(k->saddr, ALERT_FLOOD, packets, now, s->window_start);
    }
    if (!is_attempt(k->proto, tcp_flags))
        return;
    struct touch_key t = {.saddr = k->saddr, .daddr = k->daddr, .dport = k->dport,
                          .proto = k->proto};
    u64 *when = touched.lookup(&t);
    if (when && *when == s->window_start)           /* already tried in this window */
        return;
    u64 start = s->window_start;
    touched.update(&t, &start);
    u64 ports = __sync_fetch_and_add(&s->ports, 1) + 1;
    if (ports >= SCAN_PORTS && !s->scan_alerted) {
        s->scan_alerted = 1;
        alert(k->saddr, ALERT_SCAN, ports, now, s->window_start);
    }
}

/* Read the headers between data and data_end into a flow key. Returns the
 * ethertype (host order); key->proto stays 0 for anything but IPv4. */
static __always_inline u16 parse(void *data, void *data_end, struct flow_key *key, u8 *tcp_flags) {
    struct ethhdr *eth = data;
    if ((void *)(eth + 1) > data_end)
        return 0;
    u16 ethertype = ntohs(eth->h_proto);
    if (ethertype != ETH_P_IP)
        return ethertype;
    struct iphdr *ip = (void *)(eth + 1);
    if ((void *)(ip + 1) > data_end)
        return ethertype;
    key->saddr = ip->saddr;
    key->daddr = ip->daddr;
    key->proto = ip->protocol;
    if (ip->frag_off & htons(0x1FFF))               /* a later fragment: no L4 header */
        return ethertype;
    u8 *l4 = (u8 *)ip + ip->ihl * 4;                /* the IP header may carry options */
    if (ip->protocol == PROTO_TCP || ip->protocol == PROTO_UDP) {
        if ((void *)(l4 + 4) > data_end)
            return ethertype;
        key->sport = ((u16)l4[0] << 8) | l4[1];
        key->dport = ((u16)l4[2] << 8) | l4[3];
    }
    if (ip->protocol == PROTO_TCP && (void *)(l4 + 14) <= data_end)
        *tcp_flags = l4[13];
    return ethertype;
}

/* Account one frame of `len` bytes. Returns 1 if it is to be sampled. */
static __always_inline int account(void *data, void *data_end, u64 len) {
    struct flow_key key = {};
    u8 tcp_flags = 0;
    u64 now = bpf_ktime_get_ns();
    u16 ethertype = parse(data, data_end, &key, &tcp_flags);

    struct proto_key pk = {.ethertype = ethertype, .proto = key.proto};
    struct counter czero = {}, *c = protocols.lookup_or_try_init(&pk, &czero);
    if (c) {
        __sync_fetch_and_add(&c->packets, 1);
        __sync_fetch_and_add(&c->bytes, len);
    }
    if (ethertype == ETH_P_IP && key.saddr) {
        struct flow_val vzero = {.first_ns = now};
        struct flow_val *v = flows.lookup_or_try_init(&key, &vzero);
        if (v) {
            __sync_fetch_and_add(&v->packets, 1);
            __sync_fetch_and_add(&v->bytes, len);
            v->last_ns = now;
            v->tcp_flags |= tcp_flags;
        }
        detect(&key, tcp_flags, now);
    }
#if SAMPLE_RATE > 0
    int seen = CTR_SEEN;
    u64 *n = counters.lookup(&seen);
    if (n && __sync_fetch_and_add(n, 1) % SAMPLE_RATE == 0)
        return 1;
#endif
    return 0;
}

/* Reserve a sample for a frame of `len` bytes and fill its header; the
 * caller copies the bytes (with its hook's helper) and submits it. */
static __always_inline struct sample *sample_reserve(u64 len, u32 ifindex, u32 dir) {
    struct sample *s = samples.ringbuf_reserve(sizeof(struct sample));
    if (!s) {
        count(CTR_SAMPLE_LOST);
        return 0;
    }
    s->ts_ns = bpf_ktime_get_ns();
    s->pkt_len = len;
    s->cap_len = len < SNAP_LEN ? len : SNAP_LEN;
    s->ifindex = ifindex;
    s->direction = dir;
    return s;
}

int netflow_xdp(struct xdp_md *ctx) {
    void *data = (void *)(long)ctx->data;
    void *data_end = (void *)(long)ctx->data_end;
    u64 len = data_end - data;
    if (!account(data, data_end, len))
        return XDP_PASS;
    struct sample *s = sample_reserve(len, ctx->ingress_ifindex, DIR_INGRESS);
    if (!s)
        return XDP_PASS;
    u64 cap = len < SNAP_LEN ? len : SNAP_LEN;
    if (cap == 0 || bpf_xdp_load_bytes(ctx, 0, s->data, cap) != 0)
        samples.ringbuf_discard(s, 0);
    else
        samples.ringbuf_submit(s, 0);
    return XDP_PASS;
}

static __always_inline int tc_account(struct __sk_buff *skb, u32 dir) {
    void *data = (void *)(long)skb->data;
    void *data_end = (void *)(long)skb->data_end;
    u64 len = skb->len;
    if (!account(data, data_end, len))
        return 0;                                     /* TC_ACT_OK: let it go on */
    struct sample *s = sample_reserve(len, skb->ifindex, dir);
    if (!s)
        return 0;
    u64 cap = len < SNAP_LEN ? len : SNAP_LEN;
    if (cap == 0 || bpf_skb_load_bytes(skb, 0, s->data, cap) != 0)
        samples.ringbuf_discard(s, 0);
    else
        samples.ringbuf_submit(s, 0);
    return 0;
}

int netflow_tc_in(struct __sk_buff *skb) { return tc_account(skb, DIR_INGRESS); }
int netflow_tc_out(struct __sk_buff *skb) { return tc_account(skb, DIR_EGRESS); }
