"""Fuzz harness for the SIIT core: one invariant, "the core never raises".

Inputs are random bytes, and mutations (bit flips, byte sets, truncation,
extension, splices) of seeds: every packet of the Jool corpus plus a few
built-in ones. Run it long with ``make fuzz`` (``python -m tests.fuzz.harness N``).
"""

from __future__ import annotations

import random
import sys
import time
from pathlib import Path

from v6mostly.siit.translator import HEADROOM, Translator, TranslatorConfig
from v6mostly.siit.verdict import DROPPED, SLOW


def seeds() -> list[bytes]:
    out: list[bytes] = []
    try:
        sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "conformance"))
        from corpus import corpus_dir

        base = corpus_dir()
        out = [p.read_bytes() for p in sorted(base.rglob("*.pkt"))]
    except (ImportError, FileNotFoundError):
        pass
    out = out or [bytes.fromhex("4500001c000100004011f7c6c633640acb0071100001000200080000")]
    return out + own_address_seeds()


def own_address_seeds() -> list[bytes]:
    """Packets for the first translator's own addresses (echo, UDP, another protocol,
    hop limit 1), so the mutations reach the answers of ``siit.local``."""
    from v6mostly.siit.icmp_errors import build_v4, build_v6

    own4, own6 = bytes([198, 51, 100, 1]), bytes.fromhex("20010db801c000020001000000000000")
    peer4, peer6 = bytes([198, 51, 100, 2]), bytes.fromhex("20010db801c000020021000000000000")
    echo = bytes.fromhex("0800f7fe00010000")
    echo6 = bytes.fromhex("8000000000010000")
    udp = bytes.fromhex("0007000900080000")
    return [
        build_v4(0, 1, 0, 64, 1, peer4, own4, echo),
        build_v4(0, 1, 0, 1, 17, peer4, own4, udp),
        build_v4(0, 1, 0, 64, 253, peer4, own4, b"12345678"),
        build_v6(0, 8, 58, 64, peer6, own6) + echo6,
        build_v6(0, 8, 17, 1, peer6, own6) + udp,
        build_v6(0, 8, 60, 64, peer6, own6) + bytes((253, 0)) + bytes(6),
    ]


def translators() -> list[Translator]:
    return [
        Translator(
            TranslatorConfig(
                pool6="2001:db8:100::/40",
                eam=[("2001:db8:3::/120", "1.0.0.0/24"), ("2001:db8:2::/120", "10.0.0.0/24")],
                pool6791_v4=["203.0.113.8"],
                ipv4_address="198.51.100.1",
                ipv6_address="2001:db8:1c0:2:1::",
                decrement_ttl=True,
                ipv6_mtu=1280,
                ipv4_mtu=1400,
            )
        ),
        Translator(TranslatorConfig(pool6="64:ff9b::/96", amend_udp_checksum_zero=False)),
    ]


def mutate(rng: random.Random, data: bytes, pool: list[bytes]) -> bytes:
    b = bytearray(data)
    for _ in range(rng.randint(1, 6)):
        op = rng.randrange(7)
        if op == 0 and b:
            i = rng.randrange(len(b))
            b[i] ^= 1 << rng.randrange(8)
        elif op == 1 and b:
            b[rng.randrange(len(b))] = rng.choice((0, 1, 0x7F, 0x80, 0xFF, rng.randrange(256)))
        elif op == 2 and b:
            del b[rng.randrange(len(b)) :]
        elif op == 3:
            b += bytes(rng.randrange(256) for _ in range(rng.randrange(64)))
        elif op == 4 and pool:
            other = rng.choice(pool)
            cut = rng.randrange(len(other) + 1)
            b = b[: rng.randrange(len(b) + 1)] + other[cut:]
        elif op == 5 and len(b) > 8:
            # Poke the length and header-length fields, the favourite bug places.
            for i in (0, 2, 3, 4, 5, 6, 9, 40, 41, 44, 45):
                if i < len(b) and rng.random() < 0.3:
                    b[i] = rng.randrange(256)
        elif op == 6:
            b = bytearray(rng.randrange(256) for _ in range(rng.randrange(1, 120)))
            b[0] = rng.choice((0x45, 0x46, 0x4F, 0x60))
    return bytes(b)


def run(n: int, seed: int = 0, report_every: int = 0) -> dict[str, int]:
    rng = random.Random(seed)
    pool = seeds()
    xls = translators()
    buf = bytearray(70000)
    counts = {"inputs": 0, "translated": 0, "slow": 0, "dropped": 0}
    t0 = time.monotonic()
    for i in range(n):
        data = (
            mutate(rng, rng.choice(pool), pool)
            if rng.random() < 0.9
            else bytes(rng.randrange(256) for _ in range(rng.randrange(0, 100)))
        )
        data = data[:65000]
        xl = xls[i & 1]
        buf[HEADROOM : HEADROOM + len(data)] = data
        s, e = xl.translate_into(buf, HEADROOM, HEADROOM + len(data))
        if s >= 0:
            assert 0 <= s <= e <= HEADROOM + len(data) + 8
            counts["translated"] += 1
        elif s == SLOW:
            assert xl.pending and all(isinstance(p, bytes) and p for p in xl.pending)
            xl.pending.clear()
            counts["slow"] += 1
        else:
            assert s == DROPPED and xl.pending == []
            counts["dropped"] += 1
        # The allocating API too, every so often.
        if i % 16 == 0:
            v = xl.translate(data)
            assert v.packets or v.drop is not None
        counts["inputs"] += 1
        if report_every and (i + 1) % report_every == 0:
            rate = (i + 1) / (time.monotonic() - t0)
            print(f"{i + 1} inputs, {rate:.0f}/s, {counts}", flush=True)
    counts["local_replies"] = sum(x.stats.local_replies for x in xls)
    return counts


if __name__ == "__main__":
    total = int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000
    result = run(total, seed=int(sys.argv[2]) if len(sys.argv) > 2 else 0, report_every=100_000)
    print(f"done: {result}")
