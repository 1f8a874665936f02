"""What transport layers (UDP, TCP, ICMP sockets) see of IP.

The stack implements ``IpService``. A transport builds its segment with the
checksum over the pseudo-header of ``route.src``/``route.dst`` and hands it to
``ip_send``. Sockets keep the ``OutRoute`` they got and reuse it while
``route_valid(route)`` holds (the table generation is recorded in the route
itself, so a cached route cannot outlive a table change: FreeBSD's unrecorded
``inp_rt_cookie`` cannot happen by construction).
"""

from __future__ import annotations

import errno as _errno
import random
from typing import TYPE_CHECKING, NamedTuple, Protocol

if TYPE_CHECKING:
    from stack.core.stats import Stats


class OutRoute(NamedTuple):
    """One output decision, as ``tapstack route get`` prints it."""

    dst: bytes          # final destination (4 or 16 bytes)
    zone: int           # zone of dst (ifindex) when link-scope, else 0
    src: bytes          # chosen source address (same family as dst)
    src_zone: int       # zone of src when link-scope, else 0
    ifp: int            # transmit interface (1 = loopback shortcut)
    origifp: int        # interface owning the address (receive interface of looped packets)
    nexthop: bytes      # next-hop address: dst itself when on-link; may be IPv6 for an IPv4 dst
    nexthop_zone: int   # zone of nexthop (ifindex) when link-scope
    mtu: int            # path MTU toward dst
    gen: int            # routing generation this decision was made in
    local: bool         # dst is one of our addresses (ifp == loopback)


class RouteError(OSError):
    """No usable route or source. ``errno`` is what a socket reports."""

    def __init__(self, err: int, detail: str = "") -> None:
        super().__init__(err, detail or _errno.errorcode.get(err, str(err)))


# ip6/ip4 input verdict when deliver() already wrote the input trace line (before the
# protocol ran, so the trace shows an input ahead of the output it causes)
TRACED = "traced"


def max_l4_len(dst: bytes) -> int:
    """Largest upper-layer message (header included) one IP datagram can carry toward
    ``dst``, fragmented if need be: 65535 less the IPv4 header, or the IPv6 Payload
    Length maximum (no jumbograms, RFC 2675). UDP payload: this less 8 (65507 / 65527,
    as Linux)."""
    return 65535 - 20 if len(dst) == 4 else 65535


def message_too_long() -> RouteError:
    """What a socket or ping gets for a datagram over ``max_l4_len`` (Linux: EMSGSIZE)."""
    return RouteError(_errno.EMSGSIZE, "Message too long")


class IpService(Protocol):
    stats: Stats
    rng: random.Random

    def route_output(self, dst: bytes, zone: int, src: bytes | None, now: int) -> OutRoute: ...

    def route_valid(self, route: OutRoute) -> bool: ...

    def ip_send(self, route: OutRoute, proto: int, l4: bytes, now: int, *, cached: bool = False,
                tclass: int = 0, hop_limit: int | None = None, gso: int = 0) -> None: ...

    def confirm_reachable(self, route: OutRoute, now: int) -> None: ...

    def is_local_address(self, addr: bytes, zone: int) -> bool: ...

    def emit(self, event: object) -> None: ...
