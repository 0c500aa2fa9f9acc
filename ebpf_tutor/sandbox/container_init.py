"""The first process of a container (pid 1 of its pid namespace).

Started by `ebpf_tutor.sandbox.container.Container` through `unshare`; not imported by the
package. It prepares the container's own view (hostname, loopback up, a
private tmpfs copy of /etc so that writes "below /etc" never reach the
host's), says "ready", and then runs commands for its parent: one JSON line
in on stdin, one JSON line out ({"rc", "out", "err"}) when the command ends.
Its children inherit all its namespaces and its cgroup, so nothing that runs
in the container calls setns() or unshare() to get there.
"""
import fcntl
import json
import os
import signal
import socket
import struct
import subprocess
import sys

SIOCGIFFLAGS, SIOCSIFFLAGS, IFF_UP = 0x8913, 0x8914, 0x1


def loopback_up() -> None:
    """`ip link set lo up`, without needing iproute2."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        req = struct.pack("16sH14x", b"lo", 0)
        flags = struct.unpack("16sH14x", fcntl.ioctl(s, SIOCGIFFLAGS, req))[1]
        fcntl.ioctl(s, SIOCSIFFLAGS, struct.pack("16sH14x", b"lo", flags | IFF_UP))


def setup(hostname: str) -> None:
    socket.sethostname(hostname)
    loopback_up()
    # a tmpfs copy of /etc over /etc, in this mount namespace only
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "ctr-etc", "/mnt"], check=True)
    subprocess.run(["cp", "-a", "/etc", "/mnt/etc"], check=True)
    subprocess.run(["mount", "--bind", "/mnt/etc", "/etc"], check=True)


def main() -> int:
    setup(sys.argv[1])
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    print("ready", flush=True)
    for line in sys.stdin:
        req = json.loads(line)
        try:
            r = subprocess.run(req["argv"], capture_output=True, text=True,
                               timeout=req.get("timeout", 30), input=req.get("input"))
            reply = {"rc": r.returncode, "out": r.stdout, "err": r.stderr}
        except subprocess.TimeoutExpired:
            reply = {"rc": None, "out": "", "err": "timed out"}
        except OSError as e:
            reply = {"rc": 127, "out": "", "err": str(e)}
        print(json.dumps(reply), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
