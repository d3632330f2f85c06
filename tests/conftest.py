import sys
from pathlib import Path

for sub in ("conformance", "fuzz"):
    sys.path.insert(0, str(Path(__file__).resolve().parent / sub))
