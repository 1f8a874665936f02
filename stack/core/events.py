"""Events the core hands to the API layer after a core call returns.

User code never runs inside a core call (h11's discipline): core appends events,
the driver passes them on. ``sock`` is the core endpoint object concerned.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Readable:
    """Data (or EOF) can be read from sock."""
    sock: object


@dataclass(frozen=True, slots=True)
class Writable:
    """Send buffer space became available on sock."""
    sock: object


@dataclass(frozen=True, slots=True)
class Connected:
    """An active open completed."""
    sock: object


@dataclass(frozen=True, slots=True)
class Accepted:
    """A listener has a connection ready in its accept queue."""
    sock: object


@dataclass(frozen=True, slots=True)
class Closed:
    """The connection is fully closed (both directions done, or aborted)."""
    sock: object


@dataclass(frozen=True, slots=True)
class SocketError:
    """A socket error (errno value): ECONNREFUSED, ECONNRESET, ETIMEDOUT, EHOSTUNREACH..."""
    sock: object
    errno: int


@dataclass(frozen=True, slots=True)
class EchoReply:
    """An ICMP(v6) echo reply for a ping the stack itself sent (``Stack.ping_send``)."""
    ident: int
    seq: int
    src: bytes
    src_zone: int
    hop_limit: int
    size: int
    sent_at: int
    received_at: int


@dataclass(frozen=True, slots=True)
class PingError:
    """An ICMP error quoting one of our own echo requests (unreachable, time exceeded)."""
    ident: int
    seq: int
    src: bytes
    src_zone: int
    text: str
