"""Ring-buffer events at full speed, with backpressure and health statistics.

BCC calls a Python function once per event. That costs about a microsecond
each, so it tops out near a million events a second. This module reads the
ring buffer's memory itself, many records at a time, and decodes each batch
with one numpy call:

    with RingBufferConsumer(prog, "events", ctype=Event, handler=on_frame,
                            queue_size=1_000_000) as rb:
        ...                       # on_frame(df) runs in a thread, one DataFrame per batch
        print(rb.stats)           # received, handled, dropped, lag...
        assert rb.healthy

How a BPF ring buffer looks from user space (kernel/bpf/ringbuf.c): mmap the
map's fd and you get a consumer page (a u64 consumer_pos, the one thing we
may write), a producer page (u64 producer_pos) and the data area, which the
kernel maps twice in a row so a record that wraps past the end is still one
contiguous piece. Each record is an 8-byte header, then the sample, padded
to 8 bytes. The header's u32 length has two flag bits: BUSY (reserved, not
yet submitted: stop there) and DISCARD (skip it). Reading is: load
producer_pos, walk records from consumer_pos, copy them out, store the new
consumer_pos so the kernel may reuse the space.

Backpressure: records go from the reader thread to the handler thread
through a bounded queue (counted in events). When the handler is slower
than the kernel, `overflow="drop"` drops what does not fit (and counts it),
`overflow="block"` stops reading, so the ring buffer fills and the kernel's
bpf_ringbuf_reserve() fails instead (count those in your BPF program and
pass the counter as `lost=`).

Strings: char arrays (comm[16]) become str columns, which costs a few
hundred ns per event; `decode_strings=False` keeps them as bytes (S16)
columns at no cost.

One consumer per ring buffer: do not also open it with BCC's
open_ring_buffer() or data.EventCollector. Close the consumer before the
program (nest the `with` blocks).

Variable-size records: without a fixed record type, the consumer reads
records one by one (`mode="records"`, a Python walk over the same memory)
or lets BCC's ring_buffer_poll() call back per record (`mode="bcc"`).
The fast path relies on the CPU keeping memory loads in order (x86-64,
s390x); elsewhere (arm64...) the default is mode="bcc", whose C code has
the proper memory barriers.

Modules:
  ring      the ring's memory layout, `RingReader` (records straight out of
            the mmap'ed ring, no threads)
  stats     `ConsumerStats`, the health snapshot, and the loss-counter source
  consumer  `RingBufferConsumer`: reader and handler threads, the bounded
            queue, backpressure
  group     `ConsumerGroup`: several ring buffers, one consumer each, started
            and closed together, one table of their health
"""
from .consumer import RingBufferConsumer
from .group import ConsumerGroup
from .ring import (BUSY_BIT, DISCARD_BIT, HDR_SIZE, PAGE, ReadResult, RingReader, concat_records,
                   record_stride)
from .stats import ConsumerStats

__all__ = ["RingBufferConsumer", "ConsumerGroup", "RingReader", "ConsumerStats", "ReadResult",
           "record_stride", "concat_records", "BUSY_BIT", "DISCARD_BIT", "HDR_SIZE", "PAGE"]
