"""systemd's readiness protocol without libsystemd: ``sd_notify("READY=1")``.

When ``$NOTIFY_SOCKET`` is set (a ``Type=notify`` unit, or a test), one datagram with
the state lines is sent to that unix socket (``@name`` means the abstract namespace).
Without the variable it does nothing; a failure is logged once and never fatal.
"""

from __future__ import annotations

import logging
import os
import socket
import time

log = logging.getLogger("tapstack")


def sd_notify(*lines: str) -> bool:
    """Send ``lines`` (``"READY=1"``, ``"STATUS=..."``) to $NOTIFY_SOCKET; True if sent."""
    path = os.environ.get("NOTIFY_SOCKET")
    if not path:
        return False
    address = "\0" + path[1:] if path.startswith("@") else path
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
            s.connect(address)
            s.sendall("\n".join(lines).encode())
    except OSError as e:
        log.warning("sd_notify to %s failed: %s", path, e.strerror or e)
        return False
    return True


def monotonic_usec() -> str:
    """``MONOTONIC_USEC=...`` as systemd wants it next to ``RELOADING=1``."""
    return f"MONOTONIC_USEC={time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000}"
