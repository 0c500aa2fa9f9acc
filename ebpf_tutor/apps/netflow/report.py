"""What `ebpf-tutor netflow` prints: a text table, or one JSON object."""
from __future__ import annotations

from dataclasses import asdict

from .records import Alert, Flow, ProtocolShare, Talker


def summary(flows: list[Flow], protocols: list[ProtocolShare], talkers: list[Talker],
            alerts: list[Alert], **extra) -> dict:
    """The JSON document: everything the analyzer measured."""
    return {**extra,
            "flows": [f.as_dict() for f in flows],
            "protocols": [asdict(p) for p in protocols],
            "top_talkers": [asdict(t) for t in talkers],
            "alerts": [a.as_dict() for a in alerts]}


def flow_table(flows: list[Flow], limit: int = 20) -> str:
    head = f"{'proto':5} {'source':21} {'destination':21} {'packets':>8} {'bytes':>10} flags"
    lines = [head]
    for f in flows[:limit]:
        lines.append(f"{f.proto:5} {f.src + ':' + str(f.sport):21} {f.dst + ':' + str(f.dport):21} "
                     f"{f.packets:>8} {f.bytes:>10} {f.tcp_flags}")
    if len(flows) > limit:
        lines.append(f"... and {len(flows) - limit} more flows")
    return "\n".join(lines)


def protocol_table(protocols: list[ProtocolShare]) -> str:
    lines = [f"{'protocol':10} {'packets':>8} {'share':>6} {'bytes':>10} {'share':>6}"]
    for p in protocols:
        lines.append(f"{p.protocol:10} {p.packets:>8} {p.packet_share:>6.1%} {p.bytes:>10} "
                     f"{p.byte_share:>6.1%}")
    return "\n".join(lines)


def talker_table(talkers: list[Talker]) -> str:
    lines = [f"{'address':15} {'sent':>10} {'received':>10}  (bytes)"]
    for t in talkers:
        lines.append(f"{t.address:15} {t.sent_bytes:>10} {t.received_bytes:>10}")
    return "\n".join(lines)


def alert_line(a: Alert) -> str:
    what = f"{a.value} ports tried" if a.kind == "scan" else f"{a.value} packets"
    return f"ALERT {a.kind:5} from {a.source}: {what} within one window"


def text(doc: dict, flows: list[Flow], protocols: list[ProtocolShare], talkers: list[Talker],
         alerts: list[Alert], limit: int = 20) -> str:
    parts = [f"netflow on {doc['interface']} ({doc['hook']}), {doc['seconds']:.1f} s"
             + (" (interrupted)" if doc.get("interrupted") else ""),
             "", flow_table(flows, limit), "", protocol_table(protocols), "",
             talker_table(talkers)]
    if alerts:
        parts += ["", *(alert_line(a) for a in alerts)]
    if doc.get("pcap"):
        parts += ["", f"pcap: {doc['pcap']['packets']} sampled packets in {doc['pcap']['path']}"]
    return "\n".join(parts)
