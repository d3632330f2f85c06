"""Replay Jool's SIIT graybox corpus (../shared/conformance/jool-siit) through the core."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from v6mostly.siit.translator import Translator, TranslatorConfig


def corpus_dir() -> Path:
    env = os.environ.get("V6MOSTLY_CONFORMANCE")
    if env:
        return Path(env)
    here = Path(__file__).resolve()
    for parent in here.parents:
        cand = parent.parent / "shared" / "conformance" / "jool-siit"
        if cand.is_dir():
            return cand
    raise FileNotFoundError("conformance corpus not found: set V6MOSTLY_CONFORMANCE")


TOPOLOGY_V4 = "198.51.100.1"
TOPOLOGY_V6 = "2001:db8:1c0:2:1::"


@dataclass
class CaseResult:
    id: str
    ok: bool
    detail: str


def translator_for(case: dict, topology: dict) -> Translator:
    t = case["translator"]
    cfg = TranslatorConfig(
        pool6=t["pool6"],
        eam=[(a, b) for a, b in t["eamt"]],
        pool6791_v4=[t["rfc6791v4"]] if t["rfc6791v4"] else [],
        pool6791_v6=[t["rfc6791v6"]] if t["rfc6791v6"] else [],
        ipv4_address=topology["translator_v4"],
        ipv6_address=topology["translator_v6"],
        lowest_ipv6_mtu=t["lowest_ipv6_mtu"],
        ipv6_mtu=t["mtu_v6_link"],
        ipv4_mtu=t["mtu_v4_link"],
        amend_udp_checksum_zero=t["amend_udp_checksum_zero"],
        decrement_ttl=True,  # Jool decrements TTL itself (DESIGN.md "TTL in a TUN design")
    )
    return Translator(cfg)


def first_diff(got: bytes, want: bytes, ignore: set[int]) -> int | None:
    for i in range(max(len(got), len(want))):
        if i in ignore:
            continue
        a = got[i] if i < len(got) else None
        b = want[i] if i < len(want) else None
        if a != b:
            return i
    return None


def run_case(base: Path, case: dict, topology: dict) -> CaseResult:
    xl = translator_for(case, topology)
    pkt = (base / case["send"]).read_bytes()
    v = xl.translate(pkt)
    want = [(base / e).read_bytes() for e in case["expect"]]
    ignore = set(case["ignore_bytes"])
    if len(v.packets) != len(want):
        return CaseResult(
            case["id"], False, f"{len(v.packets)} packets out (drop={v.drop}), expected {len(want)}"
        )
    for i, (g, w) in enumerate(zip(v.packets, want, strict=True)):
        d = first_diff(g, w, ignore)
        if d is not None:
            return CaseResult(
                case["id"],
                False,
                f"packet {i}: first difference at byte {d} (len {len(g)} vs {len(w)}): "
                f"got {g[max(0, d - 4) : d + 8].hex()} want {w[max(0, d - 4) : d + 8].hex()}",
            )
    return CaseResult(case["id"], True, "")


def load_manifest() -> tuple[Path, dict]:
    base = corpus_dir()
    return base, json.loads((base / "manifest.json").read_text())
