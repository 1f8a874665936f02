"""TCP (RFC 9293 and friends), sans-I/O. See ``layer.py`` for the entry points.

``TcpLayer(ip)`` is what IP and the stack talk to; ``TcpConnection`` and
``TcpListener`` are the endpoints the asyncio layer drives.
"""

from __future__ import annotations

from stack.core.tcp.connection import TcpConnection
from stack.core.tcp.layer import TcpLayer, TcpListener
from stack.core.tcp.tcb import TcpConfig, TcpState

__all__ = ["TcpConfig", "TcpConnection", "TcpLayer", "TcpListener", "TcpState"]
