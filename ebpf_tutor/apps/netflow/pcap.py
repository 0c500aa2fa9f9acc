"""The classic pcap file format, written by hand (it is 40 lines): a
24-byte global header, then per packet a 16-byte record header and the
captured bytes. tshark, tcpdump and Wireshark read it.

    with PcapWriter("out.pcap", snap_len=128) as w:
        w.write(frame_bytes, orig_len=len_on_the_wire, ts=time.time())

We write the nanosecond variant (magic 0xa1b23c4d): the record's second
field is nanoseconds, not microseconds. Link type 1 is Ethernet.
"""
from __future__ import annotations

import struct
from pathlib import Path
from typing import BinaryIO, Iterator

MAGIC_NS, MAGIC_US = 0xA1B23C4D, 0xA1B2C3D4
VERSION = (2, 4)
LINKTYPE_ETHERNET = 1


class PcapWriter:
    def __init__(self, path: str | Path, snap_len: int = 65535,
                 linktype: int = LINKTYPE_ETHERNET):
        self.path, self.snap_len, self.count = Path(path), snap_len, 0
        self._f: BinaryIO = open(self.path, "wb")
        # magic, major, minor, thiszone, sigfigs, snaplen, network: native byte order
        self._f.write(struct.pack("=IHHiIII", MAGIC_NS, *VERSION, 0, 0, snap_len, linktype))

    def write(self, data: bytes, orig_len: int | None = None, ts_ns: int = 0) -> None:
        """One packet: `data` as captured, `orig_len` its length on the wire,
        `ts_ns` nanoseconds since the epoch."""
        data = data[:self.snap_len]
        orig = len(data) if orig_len is None else max(orig_len, len(data))
        sec, nsec = divmod(ts_ns, 1_000_000_000)
        self._f.write(struct.pack("=IIII", sec, nsec, len(data), orig) + data)
        self.count += 1

    def flush(self) -> None:
        self._f.flush()

    def close(self) -> None:
        if not self._f.closed:
            self._f.close()

    def __enter__(self) -> "PcapWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def read(path: str | Path) -> Iterator[tuple[int, int, bytes]]:
    """(timestamp in ns, original length, captured bytes) of each record of a
    classic pcap file, in either byte order and either time resolution."""
    raw = Path(path).read_bytes()
    for order in "<>":
        magic = struct.unpack_from(order + "I", raw)[0]
        if magic in (MAGIC_NS, MAGIC_US):
            break
    else:
        raise ValueError(f"{path} is not a classic pcap file")
    scale = 1 if magic == MAGIC_NS else 1000
    off = 24
    while off + 16 <= len(raw):
        sec, frac, incl, orig = struct.unpack_from(order + "IIII", raw, off)
        yield sec * 1_000_000_000 + frac * scale, orig, raw[off + 16:off + 16 + incl]
        off += 16 + incl
