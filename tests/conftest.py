"""Suite-wide pytest configuration.

The wire backend is chosen at import time by stack.wire.checksum (TAPSTACK_PURE=1
forces the pure-Python twin); the header line says which one this run uses.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))


def pytest_report_header(config):  # type: ignore[no-untyped-def]
    try:
        from stack.wire import checksum
        return f"tapstack wire backend: {checksum.BACKEND}"
    except Exception as e:  # pragma: no cover - shown in the header only
        return f"tapstack wire backend: unavailable ({e})"
