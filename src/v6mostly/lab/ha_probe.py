"""Flows for the HA lab's failover tests and ``make bench-ha`` (run inside a node).

``python -m v6mostly.lab.ha_probe tcp SERVER PATH SECONDS SRC...``: one paced HTTP
download per source address (each flow takes about SECONDS), all at once; prints
one JSON line per flow: source, status, bytes, SHA-256 of the body, error (a reset,
a timeout) and the arrival times of the data (for the outage around a failure).

``udp-send DST PORT SRC SECONDS INTERVAL_MS`` sends numbered datagrams;
``udp-recv BIND PORT SECONDS`` prints the arrival time of each sequence number.

Wall-clock times (``time.time``): every namespace shares the host's clock.
Bounded in time: every socket has a timeout, every loop a deadline.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import socket
import struct
import sys
import threading
import time
from typing import Any

CHUNK = 16384


def tcp_flow(server: str, path: str, seconds: float, src: str, size: int) -> dict[str, Any]:
    """Download ``path`` from ``src`` at about size/seconds bytes per second."""
    out: dict[str, Any] = {"source": src, "status": 0, "bytes": 0, "sha256": "", "error": ""}
    times: list[float] = []
    h = hashlib.sha256()
    rate = max(size / seconds, CHUNK)
    deadline = time.monotonic() + seconds * 4 + 30
    try:
        s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        s.bind((src, 0))
        s.settimeout(15)
        s.connect((server, 80))
        out["port"] = s.getsockname()[1]
        s.sendall(f"GET {path} HTTP/1.0\r\nHost: x\r\n\r\n".encode())
        head = b""
        start = time.monotonic()
        got = 0
        while time.monotonic() < deadline:
            data = s.recv(CHUNK)
            if not data:
                break
            now = time.time()
            if not out["status"]:  # still in the response head
                head += data
                if b"\r\n\r\n" not in head:
                    continue
                head, data = head.split(b"\r\n\r\n", 1)
                out["status"] = int(head.split()[1])
            times.append(now)
            h.update(data)
            got += len(data)
            ahead = got / rate - (time.monotonic() - start)
            if ahead > 0:
                time.sleep(min(ahead, 0.05))
        out["bytes"] = got
        s.close()
    except OSError as e:
        out["error"] = f"{type(e).__name__}: {e}"
    out["sha256"] = h.hexdigest()
    out["times"] = [round(t, 4) for t in times]
    return out


def cmd_tcp(argv: list[str]) -> int:
    server, path, seconds, size = argv[0], argv[1], float(argv[2]), int(argv[3])
    results: list[dict[str, Any]] = []
    lock = threading.Lock()

    def one(src: str) -> None:
        r = tcp_flow(server, path, seconds, src, size)
        with lock:
            results.append(r)

    threads = [threading.Thread(target=one, args=(src,)) for src in argv[4:]]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for r in results:
        print(json.dumps(r), flush=True)
    return 0


def cmd_udp_send(argv: list[str]) -> int:
    dst, port, src, seconds, interval = argv[0], int(argv[1]), argv[2], float(argv[3]), argv[4]
    step = float(interval) / 1000
    s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    s.bind((src, 0))
    end = time.monotonic() + seconds
    seq = 0
    nxt = time.monotonic()
    while time.monotonic() < end:
        s.sendto(struct.pack("!Id", seq, time.time()) + bytes(64), (dst, port))
        seq += 1
        nxt += step
        time.sleep(max(0.0, nxt - time.monotonic()))
    print(json.dumps({"sent": seq}), flush=True)
    return 0


def cmd_udp_recv(argv: list[str]) -> int:
    bind, port, seconds = argv[0], int(argv[1]), float(argv[2])
    fam = socket.AF_INET6 if ":" in bind else socket.AF_INET
    s = socket.socket(fam, socket.SOCK_DGRAM)
    s.bind((bind, port))
    s.settimeout(0.5)
    end = time.monotonic() + seconds
    got: list[tuple[int, float]] = []
    sources: set[str] = set()
    while time.monotonic() < end:
        try:
            data, peer = s.recvfrom(2048)
        except TimeoutError:
            continue
        if len(data) >= 12:
            got.append((struct.unpack("!I", data[:4])[0], round(time.time(), 4)))
            sources.add(f"{peer[0]}:{peer[1]}")
    print(json.dumps({"received": got, "sources": sorted(sources)}), flush=True)
    return 0


def max_gap(times: list[float], around: float | None = None) -> float:
    """The longest pause between two arrivals (only pauses spanning ``around``)."""
    best = 0.0
    for a, b in itertools.pairwise(times):
        if around is None or a <= around <= b:
            best = max(best, b - a)
    return best


def main(argv: list[str]) -> int:
    cmds = {"tcp": cmd_tcp, "udp-send": cmd_udp_send, "udp-recv": cmd_udp_recv}
    if not argv or argv[0] not in cmds:
        print(f"usage: ha_probe {{{','.join(cmds)}}} ...", file=sys.stderr)
        return 2
    return cmds[argv[0]](argv[1:])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
