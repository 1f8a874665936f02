"""A listening socket: SYN queue, accept queue, and the API's ``accept()``.

RFC 9293 §3.10.7.2 (LISTEN), RFC 4987 §3.6 (SYN cookies take over when the
SYN queue is full, so legitimate clients keep getting through a SYN flood;
what happens on the wire is ``TcpLayer``'s job). Both queues are bounded by
the backlog: a full SYN queue switches to cookies, a full accept queue drops
SYNs and handshake-completing ACKs (the peer retransmits, as with Linux's
default ``tcp_abort_on_overflow = 0``).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING

from stack.core.events import Accepted
from stack.core.tcp.tcb import TcpControlBlock, TcpState

if TYPE_CHECKING:
    from stack.core.tcp.connection import TcpConnection

Key = tuple[bytes, int, bytes, int, int]    # (local, lport, remote, rport, zone)


class TcpListener:
    """LISTEN on ``(local or any, port, zone)``; ``accept()`` hands out connections."""

    __slots__ = ("_close_cb", "_emit", "accept_queue", "backlog", "local", "open", "port",
                 "syn_queue", "zone")

    def __init__(self, local: bytes | None, port: int, zone: int, backlog: int,
                 emit: Callable[[object], None], close_cb: Callable[[TcpListener, int | None], None]) -> None:
        self.local = local
        self.port = port
        self.zone = zone
        self.backlog = max(1, backlog)
        self.syn_queue: dict[Key, TcpConnection] = {}
        self.accept_queue: deque[TcpConnection] = deque()
        self.open = True
        self._emit = emit
        self._close_cb = close_cb

    def __repr__(self) -> str:
        return f"<TcpListener port={self.port} queued={len(self.accept_queue)}>"

    @property
    def state(self) -> TcpState:
        return TcpState.LISTEN if self.open else TcpState.CLOSED

    def accept(self) -> TcpConnection | None:
        """The oldest established connection not yet accepted, or None."""
        return self.accept_queue.popleft() if self.accept_queue else None

    def close(self, now: int | None = None) -> None:
        """Stop listening; connections not yet accepted are reset."""
        if self.open:
            self.open = False
            self._close_cb(self, now)

    def syn_queue_full(self) -> bool:
        return len(self.syn_queue) >= self.backlog

    def accept_queue_full(self) -> bool:
        return len(self.accept_queue) >= self.backlog

    def on_established(self, conn: TcpControlBlock) -> None:
        """A passive connection completed its handshake (called by the connection)."""
        from stack.core.tcp.connection import TcpConnection

        assert isinstance(conn, TcpConnection)
        self.syn_queue.pop((conn.local, conn.lport, conn.remote, conn.rport, conn.zone), None)
        if self.open:
            self.accept_queue.append(conn)
            self._emit(Accepted(self))
