"""The benchmark harness (`make bench`, docs/12-performance.md).

It starts, waits for and stops its processes with the E2E suite's helpers (e2e/harness.py: one
implementation for both harnesses), so e2e/ goes on the import path here.
"""

import sys
from pathlib import Path

_E2E = str(Path(__file__).resolve().parent.parent / "e2e")
if _E2E not in sys.path:
    sys.path.append(_E2E)
