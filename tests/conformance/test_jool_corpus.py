"""Every case of Jool's SIIT graybox corpus, replayed through the core.

The corpus comes from a translator inside the kernel that decrements TTL
itself, so the translator runs in that mode here (``decrement_ttl=True``).
Cases that encode in-kernel behaviour a TUN translator legitimately does
differently would be listed in ``KNOWN_DIFFERENCES`` with a one-line reason;
today every case passes, so the list is empty. Case rfc7915-070 is worth a
word: there the kernel fragments after translation (lowest-ipv6-mtu 1500, link
MTU 1280) and the corpus ignores the Fragment Header ID it chose; this core
fragments itself, to the smaller of the two MTUs, with the IPv4 ID.
"""

from __future__ import annotations

import os

import pytest
from corpus import load_manifest, run_case

KNOWN_DIFFERENCES: dict[str, str] = {}

try:
    BASE, MANIFEST = load_manifest()
except FileNotFoundError:
    if os.environ.get("CI"):
        raise  # CI has the corpus: never skip it there
    pytest.skip(
        "Jool's SIIT corpus not found beside the clone (../shared/conformance/jool-siit): "
        "set V6MOSTLY_CONFORMANCE=DIR to run it",
        allow_module_level=True,
    )
CASES = MANIFEST["cases"]


@pytest.mark.parametrize("case", CASES, ids=[c["id"] for c in CASES])
def test_case(case: dict) -> None:
    if case["id"] in KNOWN_DIFFERENCES:
        pytest.skip(KNOWN_DIFFERENCES[case["id"]])
    r = run_case(BASE, case, MANIFEST["topology"])
    assert r.ok, r.detail


def test_corpus_is_complete() -> None:
    assert len(CASES) == 124
