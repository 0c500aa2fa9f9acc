"""What systrace prints: strace-like lines, JSON lines, and the `-c` table.

    [pid  4242] openat(AT_FDCWD, "/etc/hostname", O_RDONLY|O_CLOEXEC) = 3 <0.000012>

    % time     seconds  usecs/call     calls    errors syscall
    ------ ----------- ----------- --------- --------- ----------------
     61.02    0.000144          28         5           openat
"""
from __future__ import annotations

import csv
import io
import json
from typing import Iterable

from . import decode, syscalls
from .probes import SyscallStat


def _text(b) -> str:
    if isinstance(b, bytes):
        return b.split(b"\0", 1)[0].decode("utf-8", errors="replace")
    return str(b)


def event_record(e) -> dict:
    """One event (a numpy record or an Event) as a plain dict."""
    nr = int(e["nr"])
    name = syscalls.name(nr)
    args = [int(a) for a in e["args"]]
    ret = int(e["ret"])
    path = _text(e["path"])
    kinds = decode.SIGNATURES.get(name, ())
    has_path = "path" in kinds
    return {
        "ts_ns": int(e["ts"]), "pid": int(e["pid"]), "tid": int(e["tid"]),
        "comm": _text(e["comm"]), "syscall": name, "nr": nr,
        "args": decode.format_args(name, args, path if has_path else None),
        "ret": ret, "error": decode.errno_name(-ret) if decode.is_error(ret) else None,
        "latency_us": int(e["lat_ns"]) / 1000.0,
    }


def event_line(rec: dict) -> str:
    """strace -f -T style: [pid N] call(args) = ret <seconds>"""
    call = f"{rec['syscall']}({', '.join(rec['args'])}) = {decode.format_return(rec['syscall'], rec['ret'])}"
    return f"[pid {rec['tid']:>6} {rec['comm']}] {call} <{rec['latency_us'] / 1e6:.6f}>"


def event_json(rec: dict) -> str:
    return json.dumps(rec, separators=(",", ":"))


CSV_EVENT_FIELDS = ("ts_ns", "pid", "tid", "comm", "syscall", "nr", "ret", "error",
                    "latency_us", "args")
CSV_SUMMARY_FIELDS = ("syscall", "calls", "errors", "total_us", "avg_us", "max_us")


def _csv_row(values) -> str:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="").writerow(values)
    return buf.getvalue()


def csv_header(summary: bool) -> str:
    return _csv_row(CSV_SUMMARY_FIELDS if summary else CSV_EVENT_FIELDS)


def event_csv(rec: dict) -> str:
    """One event as a CSV row (the arguments joined by ", ", as in the call)."""
    return _csv_row([", ".join(rec[f]) if f == "args" else ("" if rec[f] is None else rec[f])
                     for f in CSV_EVENT_FIELDS])


def summary_csv(stats: dict[str, SyscallStat]) -> str:
    rows = [csv_header(True)]
    for s in sorted_rows(stats):
        rows.append(_csv_row([s.name, s.calls, s.errors, f"{s.total_ns / 1e3:.3f}",
                              f"{s.avg_ns / 1e3:.3f}", f"{s.max_ns / 1e3:.3f}"]))
    return "\n".join(rows)


def sorted_rows(stats: dict[str, SyscallStat]) -> list[SyscallStat]:
    """By total time, then calls, then name (strace -c's default order is by time)."""
    return sorted(stats.values(), key=lambda s: (-s.total_ns, -s.calls, s.name))


def summary_table(stats: dict[str, SyscallStat]) -> str:
    """The `-c` table, in strace's columns."""
    rows = sorted_rows(stats)
    total = sum(s.total_ns for s in rows) or 1
    lines = ["% time     seconds  usecs/call     calls    errors syscall",
             "------ ----------- ----------- --------- --------- ----------------"]
    for s in rows:
        err = str(s.errors) if s.errors else ""
        lines.append(f"{100 * s.total_ns / total:6.2f} {s.total_ns / 1e9:11.6f} "
                     f"{s.avg_ns / 1e3:11.0f} {s.calls:9d} {err:>9} {s.name}")
    lines.append(lines[1])
    calls, errors = sum(s.calls for s in rows), sum(s.errors for s in rows)
    lines.append(f"100.00 {sum(s.total_ns for s in rows) / 1e9:11.6f} "
                 f"{(sum(s.total_ns for s in rows) / calls / 1e3 if calls else 0):11.0f} "
                 f"{calls:9d} {errors or '':>9} total")
    return "\n".join(lines)


def summary_json(stats: dict[str, SyscallStat], extra: dict | None = None) -> str:
    rows = [{"syscall": s.name, "calls": s.calls, "errors": s.errors,
             "total_us": s.total_ns / 1e3, "avg_us": s.avg_ns / 1e3, "max_us": s.max_ns / 1e3}
            for s in sorted_rows(stats)]
    return json.dumps({"summary": rows, **(extra or {})})


def counts(stats: dict[str, SyscallStat]) -> dict[str, int]:
    return {name: s.calls for name, s in stats.items()}


def parse_strace_c(text: str) -> dict[str, tuple[int, int]]:
    """strace -c's table as {syscall: (calls, errors)} (the total row left out)."""
    out: dict[str, tuple[int, int]] = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) < 5 or not parts[0][0].isdigit() or parts[-1] == "total":
            continue
        try:
            nums = [float(p) for p in parts[:-1]]
        except ValueError:
            continue
        calls = int(nums[3])
        errors = int(nums[4]) if len(nums) > 4 else 0
        out[parts[-1]] = (calls, errors)
    return out


def iter_lines(records: Iterable[dict], as_json: bool) -> Iterable[str]:
    for rec in records:
        yield event_json(rec) if as_json else event_line(rec)
