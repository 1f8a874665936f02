"""Counters and drop reasons. Every dropped packet increments exactly one Drop.

Counters are the drop log (gVisor stats): nothing is logged per packet.
``Stats.snapshot()`` is what ``tapstack stats -j`` prints.
"""

from __future__ import annotations

from collections import Counter
from enum import StrEnum


class Drop(StrEnum):
    # link / parse
    ETH_NOT_FOR_US = "eth_not_for_us"
    ETHERTYPE_UNKNOWN = "ethertype_unknown"
    IFACE_UNKNOWN = "iface_unknown"
    IFACE_DOWN = "iface_down"
    # IPv6 input
    IPV6_NOT_FOR_US = "ipv6_not_for_us"
    IPV6_BAD_SOURCE = "ipv6_bad_source"
    IPV6_SPOOFED_OWN_SOURCE = "ipv6_own_source_from_wire"
    IPV6_LOOPBACK_FROM_WIRE = "ipv6_loopback_from_wire"
    IPV6_BAD_SCOPE = "ipv6_bad_scope"
    IPV6_TENTATIVE_DST = "ipv6_tentative_dst"
    IPV6_UNKNOWN_PROTO = "ipv6_unknown_proto"
    IPV6_EXT_UNKNOWN_OPTION = "ipv6_ext_unknown_option"
    IPV6_ROUTING_HEADER = "ipv6_routing_header"
    IPV6_HOP_LIMIT_EXCEEDED = "ipv6_hop_limit_exceeded"
    IPV6_NO_ROUTE = "ipv6_no_route"
    IPV6_BEYOND_SCOPE = "ipv6_beyond_scope"
    IPV6_TOO_BIG = "ipv6_too_big"
    IPV6_FORWARDING_OFF = "ipv6_forwarding_off"
    # fragments
    FRAG_OVERLAP = "frag_overlap"
    FRAG_TIMEOUT = "frag_timeout"
    FRAG_LIMIT = "frag_limit"
    FRAG_BAD = "frag_bad"
    FRAG_TINY = "frag_tiny"                      # RFC 7112 / RFC 1858: header chain cut short
    # IPv4 / ARP
    IPV4_NOT_FOR_US = "ipv4_not_for_us"
    IPV4_BAD_SOURCE = "ipv4_bad_source"
    IPV4_SPOOFED_OWN_SOURCE = "ipv4_own_source_from_wire"
    IPV4_LOOPBACK_FROM_WIRE = "ipv4_loopback_from_wire"
    IPV4_UNKNOWN_PROTO = "ipv4_unknown_proto"
    IPV4_TTL_EXCEEDED = "ipv4_ttl_exceeded"
    IPV4_NO_ROUTE = "ipv4_no_route"
    IPV4_NO_SOURCE = "ipv4_no_source"
    IPV4_NEEDS_FRAG = "ipv4_needs_frag"
    IPV4_MARTIAN = "ipv4_martian"                # RFC 1812 §5.3.7, RFC 3927 §2.7
    IPV4_BAD_OPTION = "ipv4_bad_option"
    IPV4_SOURCE_ROUTE = "ipv4_source_route"      # RFC 7126 §4.3/§4.4
    IPV4_DIRECTED_BROADCAST = "ipv4_directed_broadcast"  # RFC 2644
    IPV6_MARTIAN = "ipv6_martian"                # RFC 4291 §2.5.2: :: is never forwarded
    ARP_ADDRESS_CONFLICT = "arp_address_conflict"  # RFC 5227 §2.4
    ARP_BAD = "arp_bad"
    ARP_NOT_FOR_US = "arp_not_for_us"
    ARP_UNSOLICITED = "arp_unsolicited"          # a reply nobody asked for creates no entry
    # checksums
    BAD_CHECKSUM = "bad_checksum"
    # ICMP
    ICMP_UNKNOWN_TYPE = "icmp_unknown_type"
    ICMP_ERROR_RATE_LIMITED = "icmp_error_rate_limited"
    ICMP_ERROR_SUPPRESSED = "icmp_error_suppressed"
    ICMP_ERROR_NO_MATCH = "icmp_error_no_match"
    # ND
    ND_BAD_HOP_LIMIT = "nd_bad_hop_limit"
    ND_BAD_CODE = "nd_bad_code"
    ND_BAD_LENGTH = "nd_bad_length"
    ND_BAD_OPTION = "nd_bad_option"
    ND_BAD_SOURCE = "nd_bad_source"
    ND_BAD_TARGET = "nd_bad_target"
    ND_BAD_DEST = "nd_bad_dest"
    ND_TARGET_NOT_OURS = "nd_target_not_ours"
    ND_FRAGMENTED = "nd_fragmented"
    ND_NO_OVERRIDE = "nd_no_override"
    ND_UNSOLICITED_IGNORED = "nd_unsolicited_ignored"
    ND_QUEUE_OVERFLOW = "nd_queue_overflow"
    ND_RESOLUTION_FAILED = "nd_resolution_failed"
    ND_CACHE_FULL = "nd_cache_full"
    ND_FLUSHED = "nd_flushed"                    # queued on an entry removed by neigh flush
    ND_RA_IGNORED = "nd_ra_ignored"
    ND_RA_BAD_SOURCE = "nd_ra_bad_source"
    ND_REDIRECT_IGNORED = "nd_redirect_ignored"
    ND_REDIRECT_BAD_SOURCE = "nd_redirect_bad_source"
    ND_REDIRECT_BAD_TARGET = "nd_redirect_bad_target"
    ND_REDIRECT_BAD_DEST = "nd_redirect_bad_dest"
    ND_REDIRECT_NOT_FROM_ROUTER = "nd_redirect_not_from_router"
    MLD_BAD = "mld_bad"
    MLD_BAD_HOP_LIMIT = "mld_bad_hop_limit"
    MLD_BAD_SOURCE = "mld_bad_source"
    MLD_NO_ROUTER_ALERT = "mld_no_router_alert"
    # transport
    UDP_NO_PORT = "udp_no_port"
    UDP_BAD_LENGTH = "udp_bad_length"
    UDP_RCVBUF_FULL = "udp_rcvbuf_full"
    TCP_NO_PORT = "tcp_no_port"
    TCP_BAD_SEGMENT = "tcp_bad_segment"
    TCP_BACKLOG_FULL = "tcp_backlog_full"
    TCP_OUT_OF_WINDOW = "tcp_out_of_window"      # beyond the receive window: ACKed (RFC 9293 §3.10.7.4)
    TCP_OOO_LIMIT = "tcp_ooo_limit"
    TCP_MEM_PRESSURE = "tcp_mem_pressure"        # data refused: limits.tcp_mem is spent
    TCP_CONN_LIMIT = "tcp_conn_limit"            # a SYN (or cookie ACK) at limits.tcp_max_connections
    # TCP segments a connection or listener does not act on (README "TCP drop reasons")
    TCP_DUPLICATE = "tcp_duplicate"              # entirely below RCV.NXT (a retransmission): ACKed
    TCP_PAWS = "tcp_paws"                        # RFC 7323 §5.3: TSval older than TS.Recent: ACKed
    TCP_CLOSED = "tcp_closed"                    # reached a connection already CLOSED
    TCP_RST_IN_WINDOW = "tcp_rst_in_window"      # RST in window, not at RCV.NXT: challenge ACK (RFC 5961 §3.2)
    TCP_RST_TIME_WAIT = "tcp_rst_time_wait"      # RFC 1337: TIME-WAIT ignores RST
    TCP_SYN_IN_WINDOW = "tcp_syn_in_window"      # SYN on a synchronized connection: challenge ACK (RFC 5961 §4.2)
    TCP_NO_ACK = "tcp_no_ack"                    # RFC 9293 §3.10.7.4 fifth: ACK bit off
    TCP_ACK_UNSENT = "tcp_ack_unsent"            # SEG.ACK > SND.NXT: ACKed (RFC 9293, RFC 5961 §5.2)
    TCP_ACK_TOO_OLD = "tcp_ack_too_old"          # SEG.ACK < SND.UNA - MAX.SND.WND: challenge ACK (RFC 5961 §5.2)
    TCP_OLD_ACK = "tcp_old_ack"                  # SEG.ACK < SND.UNA and nothing else in it: ignored
    TCP_BAD_ACK = "tcp_bad_ack"                  # SYN-RECEIVED: ACK not of our SYN: RST
    TCP_DATA_AFTER_FIN = "tcp_data_after_fin"    # text after the peer's FIN (RFC 9293 seventh: ignore)
    TCP_RST_NO_ACK = "tcp_rst_no_ack"            # SYN-SENT: RST without ACK
    TCP_NO_SYN = "tcp_no_syn"                    # SYN-SENT: neither SYN nor RST
    TCP_LISTEN_RST = "tcp_listen_rst"            # RST to a listener (RFC 9293 §3.10.7.2 first)
    TCP_LISTEN_ACK = "tcp_listen_ack"            # ACK to a listener, no SYN cookie: RST (second)
    TCP_LISTEN_NO_SYN = "tcp_listen_no_syn"      # neither SYN, ACK nor RST to a listener
    TCP_TIME_WAIT_OVERFLOW = "tcp_time_wait_overflow"  # max_time_wait reached: the connection skips TIME-WAIT
    # output
    NO_ROUTE = "no_route"
    NO_SOURCE = "no_source"
    IPV4_OUT_TOO_BIG = "ipv4_out_too_big"        # over 65535 bytes with its header (not from a socket:
    IPV6_OUT_TOO_BIG = "ipv6_out_too_big"        # those get EMSGSIZE); IPv6: payload over 65535
    LINK_TX_FULL = "link_tx_full"


class Stats:
    """Per-protocol counters plus drop reasons.

    ``count("ipv6", "in_receives")`` bumps a protocol counter; ``drop(Drop.X)``
    bumps a drop reason. Any string key works so that parse errors can be
    counted under their own reason (``parse_<reason>``).
    """

    __slots__ = ("counters", "drops")

    def __init__(self) -> None:
        self.counters: dict[str, Counter[str]] = {}
        self.drops: Counter[str] = Counter()

    def count(self, proto: str, name: str, n: int = 1) -> None:
        try:
            self.counters[proto][name] += n     # per packet: the common case first
        except KeyError:
            self.counters[proto] = Counter({name: n})

    def of(self, proto: str) -> Counter[str]:
        """The counters of one protocol, for a per-packet path to bump directly
        (``c["in_receives"] += 1``, no call); an empty one is left out of snapshots."""
        c = self.counters.get(proto)
        if c is None:
            c = self.counters[proto] = Counter()
        return c

    def drop(self, reason: str, n: int = 1) -> None:
        self.drops[str(reason)] += n

    def __getitem__(self, reason: str) -> int:
        return self.drops[str(reason)]

    def get(self, proto: str, name: str) -> int:
        c = self.counters.get(proto)
        return c[name] if c is not None else 0

    def snapshot(self) -> dict[str, dict[str, int]]:
        out: dict[str, dict[str, int]] = {p: dict(sorted(c.items())) for p, c in sorted(self.counters.items())
                                            if c}
        out["drops"] = dict(sorted(self.drops.items()))
        return out
