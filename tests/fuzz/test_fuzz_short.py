"""A short fuzz run inside the test suite (the long one is ``make fuzz``)."""

from harness import run  # type: ignore[import-not-found]


def test_core_never_raises_short_run() -> None:
    counts = run(20_000, seed=1234)
    assert counts["inputs"] == 20_000
    # The mutations reach every outcome, so the run exercises more than the drop path.
    assert counts["translated"] > 100 and counts["slow"] > 100 and counts["dropped"] > 100
