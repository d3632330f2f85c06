"""`nft -c` on a ruleset in a throwaway network namespace (shared by the unit tests)."""

from __future__ import annotations

import subprocess

import pytest


def nft_check(rules: str, setup: str = "") -> None:
    """Let nft parse and check ``rules`` (after loading the file ``setup``, if given)."""
    script = (f"nft -f {setup} && " if setup else "") + "nft -c -f -"
    r = subprocess.run(
        ["unshare", "-n", "sh", "-c", script],
        input=rules,
        text=True,
        capture_output=True,
        check=False,
    )
    if r.returncode != 0 and "Operation not permitted" in r.stderr:
        pytest.skip("needs root for unshare -n")  # CI is root: runs there
    assert r.returncode == 0, r.stderr
