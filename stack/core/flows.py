"""Flow hints: what core tells a per-flow fast path it may do without asking again.

Modelled on Linux's nf_flowtable "flow offload": core decides the first packet of a
flow on its slow path as always; when that packet was forwarded, or an echo request
answered, to a neighbor whose entry moves on by timers alone (REACHABLE, DELAY,
PROBE, PERMANENT; not STALE, which must see the next packet), core appends a ``FlowHint``
to ``Stack.flow_hints`` (only while the runtime collects them: the list is None
otherwise, and nothing here runs). The runtime installs the hint in its native table
(``stack.link.fastpath``), which from then on handles further packets of the same
(ingress interface, source, destination) whose per-packet checks pass (hop limit,
size, header shape; see native/fastpath.c) and hands everything else back to core.

Validity. A hint is a snapshot of decisions that depend on the routing table,
addresses and interfaces (``routes.gen``), the neighbor caches (``NeighborCache.epoch``:
any state or link-layer address change: REACHABLE -> STALE ends every flow that used
the entry, and the next packet takes the slow path, which moves it to DELAY as NUD wants)
and the rest of core's configuration (``Stack._flow_epoch``: forwarding on/off, limits,
learned path MTUs, CurHopLimit from an RA). ``Stack.flow_epoch()`` is the tuple of all
of them; the runtime empties its table whenever it changes and installs a hint only if
it was made in the current epoch.

Counters. Packets the fast path handled never reach core; ``Stack.fastpath_fold`` adds
them afterwards to exactly the counters the slow path would have bumped for them
(tests/core/test_flows.py compares both ways byte for byte and counter for counter).
"""

from __future__ import annotations

from typing import NamedTuple

FORWARD = 1
ECHO = 2

# Per packet of each kind the fast path handles, the counters the slow path bumps for
# it: (protocol, name). tests/core/test_flows.py compares the two ways for every kind.
FOLD_COUNTERS: dict[str, tuple[tuple[str, str], ...]] = {
    "fwd6": (("ipv6", "in_receives"), ("ipv6", "out_forwarded")),
    "fwd4": (("ipv4", "in_receives"), ("ipv4", "out_forwarded")),
    "echo6": (("ipv6", "in_receives"), ("ipv6", "in_delivers"), ("ipv6", "out_requests"),
              ("icmp6", "in_type_128"), ("icmp6", "out_echo_replies")),
    # GRO (native/fastpath.c): frames merged before core saw them. Like Linux, core's IP
    # and TCP counters count the merged packet once; these say how many were merged.
    "gro_packets": (("tcp", "gro_packets"),),
    "gro_segs": (("tcp", "gro_segs"),),
    "acks_merged": (("tcp", "gro_acks_merged"),),
}


class FlowHint(NamedTuple):
    epoch: tuple[int, int, int, int]
    family: int           # 6 or 4
    action: int           # FORWARD or ECHO
    in_ifindex: int
    out_ifindex: int
    src: bytes            # the packet's source as received (4 or 16 bytes)
    dst: bytes            # the packet's destination as received
    eth: bytes            # Ethernet header to write: next-hop MAC, our MAC, ethertype
    in_mac: bytes         # our MAC on the ingress interface
    mtu: int              # largest IP packet that may leave without the slow path
    hop_limit: int        # ECHO: the reply's hop limit / TTL


class FlowContext(NamedTuple):
    """What a forward/echo decision knows before link output resolves the next hop."""
    family: int
    action: int
    in_ifindex: int
    src: bytes
    dst: bytes
    in_mac: bytes
    mtu: int
    hop_limit: int
