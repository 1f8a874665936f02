"""Structure-aware mutation of received frames: the fuzzer's half that knows packets.

``corpus(info)`` builds real frames (scapy) of every protocol the stack speaks,
addressed to the fuzz target's stack (``tests.fuzz.target``): IPv6 with extension
header chains and fragments, ICMPv6 echo and errors, NS/NA/RS/RA/Redirect with
options, MLD queries and reports, IPv4 with options and fragments, ICMPv4, ARP,
UDP and TCP with options (a SYN for the listener and segments for the
established connection, whose sequence numbers come from ``info``).

``Mutator(rng, corpus).case()`` returns one case: a list of steps, each a frame
(``bytes``) or a time advance in ns (``int``, the target then polls). Strategies:

* byte-level: bit flips, interesting values at header fields (length fields that
  lie, next-header values, hop limits, option lengths 0/1/255), truncation,
  extension, insertion/deletion, splicing two frames, address swaps;
* structural: IPv6 extension header chains up to 30 long (with unknown options
  of every action class), tiny / overlapping / duplicate / out-of-range IPv6
  and IPv4 fragments, zero-length and oversized ND options, IPv4 options
  (source routes, record route, garbage), random bytes after a valid Ethernet
  header, random upper layers under a valid IPv6/IPv4 header;
* ``fixup``: most mutants get their lengths, IPv4 header checksum and L4
  checksum recomputed so that they reach the handlers instead of dying in the
  parser (the rest test the parser).

Everything is driven by the ``random.Random`` passed in, so a seed reproduces a run.
"""

from __future__ import annotations

import random
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from scapy.layers.inet import ICMP, IP, TCP, UDP, IPOption_Router_Alert, fragment
from scapy.layers.inet6 import (
    ICMPv6DestUnreach,
    ICMPv6EchoReply,
    ICMPv6EchoRequest,
    ICMPv6MLDMultAddrRec,
    ICMPv6MLDone,
    ICMPv6MLQuery,
    ICMPv6MLQuery2,
    ICMPv6MLReport,
    ICMPv6MLReport2,
    ICMPv6ND_NA,
    ICMPv6ND_NS,
    ICMPv6ND_RA,
    ICMPv6ND_Redirect,
    ICMPv6ND_RS,
    ICMPv6NDOptDstLLAddr,
    ICMPv6NDOptMTU,
    ICMPv6NDOptPrefixInfo,
    ICMPv6NDOptRDNSS,
    ICMPv6NDOptRedirectedHdr,
    ICMPv6NDOptRouteInfo,
    ICMPv6NDOptSrcLLAddr,
    ICMPv6NDOptUnknown,
    ICMPv6PacketTooBig,
    ICMPv6ParamProblem,
    ICMPv6TimeExceeded,
    IPv6,
    IPv6ExtHdrDestOpt,
    IPv6ExtHdrFragment,
    IPv6ExtHdrHopByHop,
    IPv6ExtHdrRouting,
    RouterAlert,
    fragment6,
)
from scapy.layers.l2 import ARP, Ether
from scapy.packet import Raw

from stack.wire import _pure
from stack.wire.errors import ParseError

# -- the target's addressing (tests.fuzz.target builds the stack to match) ----------

MAC_A = "02:00:00:00:00:0a"      # the stack
MAC_B = "02:00:00:00:00:0b"      # its on-link peer
MAC_C = "02:00:00:00:00:0c"
MAC_R = "02:00:00:00:00:01"      # a router
LL_A = "fe80::ff:fe00:a"         # link_local_from_mac(MAC_A)
LL_B = "fe80::b"
LL_R = "fe80::1"
GA_A = "2001:db8:1::2"
GA_B = "2001:db8:1::1"
V4_A = "192.0.2.2"
V4_B = "192.0.2.1"
SNM_A = "ff02::1:ff00:a"         # solicited-node of LL_A
SNM_GA = "ff02::1:ff00:2"        # solicited-node of GA_A

UDP_PORT = 9                     # wildcard-bound UDP endpoint
UDP_CONN6 = 5353                 # UDP endpoint connected to [GA_B]:9
UDP_CONN4 = 5354                 # UDP endpoint connected to V4_B:9
TCP_LISTEN = 7                   # TCP listener (any address)
TCP_LPORT = 40001                # our port of the established connection to [GA_B]:80
TCP_RPORT = 80
PING6 = (0x1234, 1)              # an outstanding ICMPv6 echo to GA_B (ident, seq)
PING4 = (0x4321, 1)              # an outstanding ICMPv4 echo to V4_B

DATA = b"tapstack-fuzz-0123456789abcdef"
BIG = bytes(range(256)) * 7      # 1792 bytes: fragments at 1280


@dataclass(frozen=True, slots=True)
class SeedInfo:
    """What the seeds must know about the target's live state."""

    tcp_iss: int                 # our ISS on the established connection
    tcp_irs: int                 # the peer's ISS


Step = bytes | int               # a frame, or an advance of the clock in ns (then poll)
Case = list[Step]


def _b(p: Any) -> bytes:
    return bytes(p)


def _frags6(pkt: Any, size: int) -> list[Any]:
    return list(fragment6(pkt, size))  # type: ignore[no-untyped-call]


def _frags4(pkt: Any, size: int) -> list[Any]:
    return list(fragment(pkt, fragsize=size))  # type: ignore[no-untyped-call]


def _eth(dst: str = MAC_A, src: str = MAC_B) -> object:
    return Ether(dst=dst, src=src)


def _udp6_inner(sport: int = UDP_CONN6, dport: int = 9) -> bytes:
    return _b(IPv6(src=GA_A, dst=GA_B, hlim=64) / UDP(sport=sport, dport=dport) / DATA)


def _tcp6_inner(info: SeedInfo) -> bytes:
    return _b(IPv6(src=GA_A, dst=GA_B) / TCP(sport=TCP_LPORT, dport=TCP_RPORT, seq=info.tcp_iss + 1,
                                           ack=info.tcp_irs + 1, flags="A"))


def _echo6_inner() -> bytes:
    return _b(IPv6(src=GA_A, dst=GA_B) / ICMPv6EchoRequest(id=PING6[0], seq=PING6[1], data=DATA))


def router_advert() -> bytes:
    """The RA of the target's router (fe80::1): default route, MTU, SLAAC prefix, RDNSS."""
    return _b(_eth("33:33:00:00:00:01", MAC_R) / IPv6(src=LL_R, dst="ff02::1", hlim=255)
              / ICMPv6ND_RA(chlim=64, M=0, O=1, routerlifetime=1800, reachabletime=30000, retranstimer=1000)
              / ICMPv6NDOptSrcLLAddr(lladdr=MAC_R) / ICMPv6NDOptMTU(mtu=1400)
              / ICMPv6NDOptPrefixInfo(prefixlen=64, L=1, A=1, validlifetime=86400,
                                      preferredlifetime=14400, prefix="2001:db8:2::")
              / ICMPv6NDOptRDNSS(lifetime=600, dns=["2001:db8::53"])
              / ICMPv6NDOptRouteInfo(plen=48, prefix="2001:db8:9::", rtlifetime=600))


def _ipv6_seeds(info: SeedInfo) -> dict[str, list[bytes]]:
    e = _eth
    tcp_opts = [("MSS", 1440), ("SAckOK", b""), ("Timestamp", (1, 0)), ("NOP", None), ("WScale", 7)]
    seq, ack = info.tcp_irs + 1, info.tcp_iss + 1
    s: dict[str, list[bytes]] = {
        "echo6_ga": [_b(e() / IPv6(src=GA_B, dst=GA_A) / ICMPv6EchoRequest(id=7, seq=1, data=DATA))],
        "echo6_ll": [_b(e() / IPv6(src=LL_B, dst=LL_A) / ICMPv6EchoRequest(id=7, seq=2, data=DATA))],
        "echo6_mcast": [_b(e("33:33:00:00:00:01") / IPv6(src=LL_B, dst="ff02::1")
                           / ICMPv6EchoRequest(id=7, seq=3))],
        "echo6_reply": [_b(e() / IPv6(src=GA_B, dst=GA_A)
                           / ICMPv6EchoReply(id=PING6[0], seq=PING6[1], data=DATA))],
        "icmp6_unreach_udp": [_b(e() / IPv6(src=GA_B, dst=GA_A) / ICMPv6DestUnreach(code=4)
                                 / Raw(_udp6_inner()))],
        "icmp6_unreach_nomatch": [_b(e() / IPv6(src=GA_B, dst=GA_A) / ICMPv6DestUnreach(code=1)
                                     / Raw(_udp6_inner(sport=31337, dport=4444)))],
        "icmp6_ptb_tcp": [_b(e() / IPv6(src=GA_B, dst=GA_A) / ICMPv6PacketTooBig(mtu=1280)
                             / Raw(_tcp6_inner(info)))],
        "icmp6_time_exceeded_echo": [_b(e() / IPv6(src=LL_R, dst=GA_A) / ICMPv6TimeExceeded(code=0)
                                        / Raw(_echo6_inner()))],
        "icmp6_param_problem": [_b(e() / IPv6(src=GA_B, dst=GA_A) / ICMPv6ParamProblem(code=0, ptr=6)
                                   / Raw(_udp6_inner()))],
        "ns_ll": [_b(e("33:33:ff:00:00:0a") / IPv6(src=LL_B, dst=SNM_A, hlim=255)
                     / ICMPv6ND_NS(tgt=LL_A) / ICMPv6NDOptSrcLLAddr(lladdr=MAC_B))],
        "ns_ga_from_c": [_b(e("33:33:ff:00:00:02", MAC_C) / IPv6(src="fe80::c", dst=SNM_GA, hlim=255)
                            / ICMPv6ND_NS(tgt=GA_A) / ICMPv6NDOptSrcLLAddr(lladdr=MAC_C))],
        "ns_unicast_probe": [_b(e() / IPv6(src=LL_B, dst=LL_A, hlim=255) / ICMPv6ND_NS(tgt=LL_A))],
        "ns_dad": [_b(e("33:33:ff:00:00:0a") / IPv6(src="::", dst=SNM_A, hlim=255) / ICMPv6ND_NS(tgt=LL_A)
                      / ICMPv6NDOptUnknown(type=14, len=1, data=b"\x01\x02\x03\x04\x05\x06"))],
        "na_solicited": [_b(e() / IPv6(src=LL_B, dst=LL_A, hlim=255)
                            / ICMPv6ND_NA(R=0, S=1, O=1, tgt=LL_B) / ICMPv6NDOptDstLLAddr(lladdr=MAC_B))],
        "na_override_c": [_b(e("33:33:00:00:00:01") / IPv6(src=LL_B, dst="ff02::1", hlim=255)
                             / ICMPv6ND_NA(R=0, S=0, O=1, tgt=LL_B) / ICMPv6NDOptDstLLAddr(lladdr=MAC_C))],
        "na_no_override": [_b(e() / IPv6(src=GA_B, dst=GA_A, hlim=255)
                              / ICMPv6ND_NA(R=1, S=1, O=0, tgt=GA_B) / ICMPv6NDOptDstLLAddr(lladdr=MAC_C))],
        "na_router_cleared": [_b(e(src=MAC_R) / IPv6(src=LL_R, dst=LL_A, hlim=255)
                                 / ICMPv6ND_NA(R=0, S=1, O=1, tgt=LL_R))],
        "rs": [_b(e("33:33:00:00:00:02") / IPv6(src=LL_B, dst="ff02::2", hlim=255)
                  / ICMPv6ND_RS() / ICMPv6NDOptSrcLLAddr(lladdr=MAC_B))],
        "ra": [router_advert()],
        "ra_lifetime0": [_b(e("33:33:00:00:00:01", MAC_R) / IPv6(src=LL_R, dst="ff02::1", hlim=255)
                            / ICMPv6ND_RA(chlim=0, routerlifetime=0)
                            / ICMPv6NDOptPrefixInfo(prefixlen=64, L=1, A=1, validlifetime=0,
                                                    preferredlifetime=0, prefix="2001:db8:2::"))],
        "redirect": [_b(e(src=MAC_R) / IPv6(src=LL_R, dst=LL_A, hlim=255)
                        / ICMPv6ND_Redirect(tgt="fe80::2", dst="2001:db8:99::1")
                        / ICMPv6NDOptDstLLAddr(lladdr=MAC_C)
                        / ICMPv6NDOptRedirectedHdr(pkt=_udp6_inner() + bytes(-len(_udp6_inner()) % 8)))],
        "mld_query_v1": [_b(e("33:33:00:00:00:01", MAC_R) / IPv6(src=LL_R, dst="ff02::1", hlim=1)
                            / IPv6ExtHdrHopByHop(options=[RouterAlert(value=0)])
                            / ICMPv6MLQuery(mrd=10000, mladdr="::"))],
        "mld_query_v2": [_b(e("33:33:00:00:00:01", MAC_R) / IPv6(src=LL_R, dst="ff02::1", hlim=1)
                            / IPv6ExtHdrHopByHop(options=[RouterAlert(value=0)])
                            / ICMPv6MLQuery2(mrd=0x8123, mladdr=SNM_A, S=0, QRV=2, QQIC=0x91,
                                             sources=["2001:db8::53"]))],
        "mld_report_v1": [_b(e("33:33:ff:00:00:0a", MAC_B) / IPv6(src=LL_B, dst=SNM_A, hlim=1)
                             / IPv6ExtHdrHopByHop(options=[RouterAlert(value=0)])
                             / ICMPv6MLReport(mladdr=SNM_A))],
        "mld_done": [_b(e("33:33:00:00:00:02", MAC_B) / IPv6(src=LL_B, dst="ff02::2", hlim=1)
                        / IPv6ExtHdrHopByHop(options=[RouterAlert(value=0)])
                        / ICMPv6MLDone(mladdr=SNM_A))],
        "mld_report_v2": [_b(e("33:33:00:00:00:16", MAC_B) / IPv6(src=LL_B, dst="ff02::16", hlim=1)
                             / IPv6ExtHdrHopByHop(options=[RouterAlert(value=0)])
                             / ICMPv6MLReport2(records=[ICMPv6MLDMultAddrRec(rtype=4, dst=SNM_A)]))],
        "ext_chain_udp": [_b(e() / IPv6(src=GA_B, dst=GA_A)
                             / IPv6ExtHdrHopByHop(options=[RouterAlert(value=0)]) / IPv6ExtHdrDestOpt()
                             / IPv6ExtHdrRouting(type=4, segleft=0) / IPv6ExtHdrDestOpt()
                             / UDP(sport=4000, dport=UDP_PORT) / DATA)],
        "routing_segleft": [_b(e() / IPv6(src=GA_B, dst=GA_A)
                               / IPv6ExtHdrRouting(type=0, segleft=1, addresses=["2001:db8:5::1"])
                               / UDP(sport=4000, dport=UDP_PORT) / DATA)],
        "udp6": [_b(e() / IPv6(src=GA_B, dst=GA_A) / UDP(sport=4000, dport=UDP_PORT) / DATA)],
        "udp6_connected": [_b(e() / IPv6(src=GA_B, dst=GA_A) / UDP(sport=9, dport=UDP_CONN6) / DATA)],
        "udp6_closed": [_b(e() / IPv6(src=GA_B, dst=GA_A) / UDP(sport=4000, dport=4444) / DATA)],
        "udp6_ll": [_b(e() / IPv6(src=LL_B, dst=LL_A) / UDP(sport=4000, dport=UDP_PORT) / DATA)],
        "tcp6_syn": [_b(e() / IPv6(src=GA_B, dst=GA_A)
                        / TCP(sport=41000, dport=TCP_LISTEN, seq=1000, flags="S", options=tcp_opts))],
        "tcp6_syn_closed": [_b(e() / IPv6(src=GA_B, dst=GA_A) / TCP(sport=41000, dport=4444, flags="S"))],
        "tcp6_data": [_b(e() / IPv6(src=GA_B, dst=GA_A)
                         / TCP(sport=TCP_RPORT, dport=TCP_LPORT, seq=seq, ack=ack, flags="PA",
                               options=[("NOP", None), ("NOP", None), ("Timestamp", (100, 1))]) / DATA)],
        "tcp6_sack": [_b(e() / IPv6(src=GA_B, dst=GA_A)
                         / TCP(sport=TCP_RPORT, dport=TCP_LPORT, seq=seq, ack=ack, flags="A",
                               options=[("NOP", None), ("NOP", None), ("SAck", (ack, ack + 100))]))],
        "tcp6_ooo": [_b(e() / IPv6(src=GA_B, dst=GA_A)
                        / TCP(sport=TCP_RPORT, dport=TCP_LPORT, seq=seq + 1000, ack=ack, flags="A") / DATA)],
        "tcp6_fin": [_b(e() / IPv6(src=GA_B, dst=GA_A)
                        / TCP(sport=TCP_RPORT, dport=TCP_LPORT, seq=seq, ack=ack, flags="FA"))],
        "tcp6_rst": [_b(e() / IPv6(src=GA_B, dst=GA_A)
                        / TCP(sport=TCP_RPORT, dport=TCP_LPORT, seq=seq, flags="R"))],
        "tcp6_urg": [_b(e() / IPv6(src=GA_B, dst=GA_A)
                        / TCP(sport=TCP_RPORT, dport=TCP_LPORT, seq=seq, ack=ack, flags="UA", urgptr=5)
                        / DATA)],
        "nh_none": [_b(e() / IPv6(src=GA_B, dst=GA_A, nh=59))],
        "nh_unknown": [_b(e() / IPv6(src=GA_B, dst=GA_A, nh=253) / Raw(b"\x00" * 16))],
        "forward_not_ours": [_b(e() / IPv6(src=GA_B, dst="2001:db8:77::9", hlim=1)
                                / UDP(sport=1, dport=2) / DATA)],
    }
    frag_udp = (IPv6(src=GA_B, dst=GA_A) / IPv6ExtHdrFragment(id=0xABCD)
                / UDP(sport=4000, dport=UDP_PORT) / BIG)
    s["frag6_udp"] = [_b(e() / f) for f in _frags6(frag_udp, 1280)]
    frag_echo = (IPv6(src=GA_B, dst=GA_A) / IPv6ExtHdrFragment(id=0xBEEF)
                 / ICMPv6EchoRequest(id=9, seq=9, data=BIG[:600]))
    s["frag6_echo"] = [_b(e() / f) for f in _frags6(frag_echo, 400)]
    ns = (IPv6(src="fe80::c", dst=SNM_A, hlim=255) / IPv6ExtHdrFragment(id=0x6980)
          / ICMPv6ND_NS(tgt=LL_A) / ICMPv6NDOptSrcLLAddr(lladdr=MAC_C) / Raw(b"\x63\x08" + bytes(62)))
    s["frag6_ns"] = [_b(e("33:33:ff:00:00:0a", MAC_C) / f) for f in _frags6(ns, 96)]
    s["frag6_atomic"] = [_b(e() / IPv6(src=GA_B, dst=GA_A) / IPv6ExtHdrFragment(id=7, offset=0, m=0)
                            / UDP(sport=4000, dport=UDP_PORT) / DATA)]
    return s


def _ipv4_seeds() -> dict[str, list[bytes]]:
    e = _eth
    udp4_inner = _b(IP(src=V4_A, dst=V4_B, id=3) / UDP(sport=UDP_CONN4, dport=9) / DATA)
    s: dict[str, list[bytes]] = {
        "icmp4_echo": [_b(e() / IP(src=V4_B, dst=V4_A, id=7) / ICMP(type=8, id=7, seq=1) / DATA)],
        "icmp4_echo_bcast": [_b(e("ff:ff:ff:ff:ff:ff") / IP(src=V4_B, dst="192.0.2.255")
                                / ICMP(type=8, id=7, seq=1))],
        "icmp4_reply": [_b(e() / IP(src=V4_B, dst=V4_A) / ICMP(type=0, id=PING4[0], seq=PING4[1]) / DATA)],
        "icmp4_unreach_udp": [_b(e() / IP(src=V4_B, dst=V4_A) / ICMP(type=3, code=3) / Raw(udp4_inner))],
        "icmp4_frag_needed": [_b(e() / IP(src="198.51.100.1", dst=V4_A) / ICMP(type=3, code=4, nexthopmtu=576)
                                 / Raw(udp4_inner[:28]))],
        "icmp4_time_exceeded": [_b(e() / IP(src=V4_B, dst=V4_A) / ICMP(type=11, code=0)
                                   / Raw(_b(IP(src=V4_A, dst=V4_B) / ICMP(type=8, id=PING4[0],
                                                                         seq=PING4[1]))))],
        "icmp4_redirect": [_b(e() / IP(src=V4_B, dst=V4_A) / ICMP(type=5, code=1, gw="192.0.2.9")
                              / Raw(udp4_inner[:28]))],
        "udp4": [_b(e() / IP(src=V4_B, dst=V4_A, id=1) / UDP(sport=4000, dport=UDP_PORT) / DATA)],
        "udp4_connected": [_b(e() / IP(src=V4_B, dst=V4_A, id=1) / UDP(sport=9, dport=UDP_CONN4) / DATA)],
        "udp4_closed": [_b(e() / IP(src=V4_B, dst=V4_A, id=1) / UDP(sport=4000, dport=4444) / DATA)],
        "udp4_bcast": [_b(e("ff:ff:ff:ff:ff:ff") / IP(src=V4_B, dst="255.255.255.255")
                          / UDP(sport=68, dport=4444) / DATA)],
        "udp4_nocsum": [_b(e() / IP(src=V4_B, dst=V4_A) / UDP(sport=4000, dport=UDP_PORT, chksum=0) / DATA)],
        "ipv4_ra_option": [_b(e() / IP(src=V4_B, dst=V4_A, options=[IPOption_Router_Alert()])
                              / UDP(sport=4000, dport=UDP_PORT) / DATA)],
        "ipv4_rr_option": [_b(e() / IP(src=V4_B, dst=V4_A, options=b"\x07\x0b\x04" + bytes(8) + b"\x00")
                              / UDP(sport=4000, dport=UDP_PORT) / DATA)],
        "ipv4_lsrr": [_b(e() / IP(src=V4_B, dst=V4_A, options=b"\x83\x07\x04\xc6\x33\x64\x01\x00")
                         / UDP(sport=4000, dport=UDP_PORT) / DATA)],
        "tcp4_syn": [_b(e() / IP(src=V4_B, dst=V4_A, flags="DF")
                        / TCP(sport=41000, dport=TCP_LISTEN, seq=1000, flags="S",
                              options=[("MSS", 1460), ("SAckOK", b""), ("WScale", 14), ("EOL", None)]))],
        "tcp4_ack_nomatch": [_b(e() / IP(src=V4_B, dst=V4_A) / TCP(sport=41000, dport=TCP_LISTEN, flags="A",
                                                                   seq=1, ack=2))],
        "igmp": [_b(e("01:00:5e:00:00:01") / IP(src=V4_B, dst="224.0.0.1", proto=2, ttl=1)
                    / Raw(b"\x11\x64\xee\x9b\x00\x00\x00\x00"))],
        "ipv4_unknown_proto": [_b(e() / IP(src=V4_B, dst=V4_A, proto=253) / Raw(DATA))],
        "ipv4_forward": [_b(e() / IP(src=V4_B, dst="198.51.100.7", ttl=1) / UDP(sport=1, dport=2))],
        "arp_request": [_b(e("ff:ff:ff:ff:ff:ff") / ARP(op=1, hwsrc=MAC_B, psrc=V4_B, pdst=V4_A))],
        "arp_reply": [_b(e() / ARP(op=2, hwsrc=MAC_C, psrc=V4_B, hwdst=MAC_A, pdst=V4_A))],
        "arp_gratuitous": [_b(e("ff:ff:ff:ff:ff:ff", MAC_C) / ARP(op=1, hwsrc=MAC_C, psrc="192.0.2.77",
                                                                pdst="192.0.2.77"))],
        "arp_probe": [_b(e("ff:ff:ff:ff:ff:ff", MAC_C) / ARP(op=1, hwsrc=MAC_C, psrc="0.0.0.0", pdst=V4_A))],
    }
    pkt = IP(src=V4_B, dst=V4_A, id=0x77) / UDP(sport=4000, dport=UDP_PORT) / BIG
    s["frag4_udp"] = [_b(e() / f) for f in _frags4(pkt, 552)]
    pkt = IP(src=V4_B, dst=V4_A, id=0x78) / ICMP(type=8, id=7, seq=5) / BIG[:200]
    s["frag4_echo"] = [_b(e() / f) for f in _frags4(pkt, 64)]
    return s


def corpus(info: SeedInfo) -> list[tuple[str, list[bytes]]]:
    """Every seed case, named; each is a list of frames (fragments come as several)."""
    seeds = {**_ipv6_seeds(info), **_ipv4_seeds()}
    return sorted(seeds.items())


# -- layout: where the fields are ------------------------------------------------------

ND_FIXED = {133: 8, 134: 16, 135: 24, 136: 24, 137: 40}
L4_CSUM = {6: 16, 17: 6, 58: 2, 1: 2}


@dataclass(slots=True)
class Layout:
    """Offsets of the interesting fields of one frame (found leniently)."""

    fields: list[tuple[int, int]]     # (offset, width 1/2/4) of header fields worth lying in
    l3: int = 14
    l4: int = -1
    proto: int = -1
    nh_fields: tuple[int, ...] = ()   # offsets of Next Header / Protocol bytes
    opt_start: int = -1               # ND options / TCP options / IPv4 options
    opt_end: int = -1
    ethertype: int = 0


def layout(frame: bytes) -> Layout:
    n = len(frame)
    lay = Layout([(0, 1), (5, 1), (12, 2)])
    if n < 14:
        return lay
    et = int.from_bytes(frame[12:14], "big")
    lay.ethertype = et
    if et == 0x86DD and n >= 54:
        lay.fields += [(14, 1), (15, 1), (18, 2), (20, 1), (21, 1), (22, 1), (37, 1), (38, 1), (53, 1)]
        nh, off, nhf = frame[20], 54, [20]
        for _ in range(40):
            if nh not in (0, 43, 44, 60) or off + 8 > n:
                break
            lay.fields += [(off, 1), (off + 1, 1), (off + 2, 1), (off + 3, 1)]
            nhf.append(off)
            if nh == 44:
                lay.fields += [(off + 2, 2), (off + 4, 4)]
                nh, off = frame[off], off + 8
                break
            nh, off = frame[off], off + (frame[off + 1] + 1) * 8
        lay.nh_fields = tuple(nhf)
        lay.l4, lay.proto = off, nh
    elif et == 0x0800 and n >= 34:
        ihl = (frame[14] & 0x0F) * 4
        lay.fields += [(14, 1), (15, 1), (16, 2), (18, 2), (20, 2), (22, 1), (23, 1), (24, 2), (26, 4),
                       (30, 4)]
        lay.nh_fields = (23,)
        lay.l4, lay.proto = 14 + max(ihl, 20), frame[23]
        if ihl > 20:
            lay.opt_start, lay.opt_end = 34, 14 + ihl
    elif et == 0x0806:
        lay.fields += [(14, 2), (16, 2), (18, 1), (19, 1), (20, 2), (28, 4), (38, 4)]
        return lay
    else:
        return lay
    l4, proto = lay.l4, lay.proto
    if l4 < 0 or l4 >= n:
        return lay
    if proto == 17:
        lay.fields += [(l4, 2), (l4 + 2, 2), (l4 + 4, 2), (l4 + 6, 2)]
    elif proto == 6:
        lay.fields += [(l4 + 4, 4), (l4 + 8, 4), (l4 + 12, 1), (l4 + 13, 1), (l4 + 14, 2), (l4 + 18, 2)]
        if l4 + 13 < n:
            doff = (frame[l4 + 12] >> 4) * 4
            if doff > 20:
                lay.opt_start, lay.opt_end = l4 + 20, min(n, l4 + doff)
    elif proto in (58, 1):
        lay.fields += [(l4, 1), (l4 + 1, 1), (l4 + 4, 4)]
        if proto == 58 and frame[l4] in ND_FIXED:
            lay.opt_start, lay.opt_end = l4 + ND_FIXED[frame[l4]], n
        if proto == 58 and frame[l4] in (130, 131, 132, 143):
            lay.fields += [(l4 + 4, 2), (l4 + 6, 2), (l4 + 24, 1), (l4 + 25, 1), (l4 + 26, 2)]
        if proto == 58 and frame[l4] < 128:
            # the quoted packet of an error: its header fields lie too
            q = l4 + 8
            lay.fields += [(q, 1), (q + 4, 2), (q + 6, 1), (q + 40, 2), (q + 42, 2)]
        if proto == 1 and frame[l4] in (3, 5, 11, 12):
            q = l4 + 8
            lay.fields += [(q, 1), (q + 9, 1), (q + 12, 4), (q + 20, 2)]
    lay.fields = [(o, w) for o, w in lay.fields if o + w <= n]
    return lay


# -- fixups: make a mutant pass the parser so that it reaches the handlers ---------------

def _put16(buf: bytearray, off: int, v: int) -> None:
    buf[off:off + 2] = (v & 0xFFFF).to_bytes(2, "big")


def fix_lengths(frame: bytes) -> bytes:
    """IPv6 Payload Length / IPv4 Total Length to what the frame carries."""
    buf = bytearray(frame)
    et = int.from_bytes(buf[12:14], "big") if len(buf) >= 14 else 0
    if et == 0x86DD and len(buf) >= 54:
        _put16(buf, 18, len(buf) - 54)
    elif et == 0x0800 and len(buf) >= 34:
        _put16(buf, 16, len(buf) - 14)
    return bytes(buf)


def fix_checksums(frame: bytes) -> bytes:
    """Recompute the IPv4 header checksum and the L4 checksum when they can be found."""
    buf = bytearray(frame)
    n = len(buf)
    et = int.from_bytes(buf[12:14], "big") if n >= 14 else 0
    if et == 0x0800 and n >= 34:
        ihl = (buf[14] & 0x0F) * 4
        if ihl >= 20 and 14 + ihl <= n:
            buf[24:26] = b"\x00\x00"
            _put16(buf, 24, _pure.internet_checksum(bytes(buf[14:14 + ihl])))
    try:
        f = _pure.parse_frame(bytes(buf))
    except ParseError:
        return bytes(buf)
    if f.ip_version == 0 or f.is_fragment or f.proto not in L4_CSUM:
        return bytes(buf)
    off, end = f.l4_off, f.ip_end
    if f.proto == 17:
        end = off + int.from_bytes(buf[off + 4:off + 6], "big")
    if f.proto == 1 and f.ip_version != 4:
        return bytes(buf)
    if f.proto == 58 and f.ip_version != 6:
        return bytes(buf)
    c = off + L4_CSUM[f.proto]
    if c + 2 > end:
        return bytes(buf)
    buf[c:c + 2] = b"\x00\x00"
    if f.proto == 1:
        pseudo = 0
    elif f.ip_version == 6:
        pseudo = _pure.pseudo_sum6(f.src, f.dst, end - off, f.proto)
    else:
        pseudo = _pure.pseudo_sum4(f.src, f.dst, end - off, f.proto)
    v = _pure.internet_checksum(bytes(buf[off:end]), pseudo)
    if f.proto == 17 and v == 0:
        v = 0xFFFF
    _put16(buf, c, v)
    return bytes(buf)


def fixup(frame: bytes, lengths: bool = True) -> bytes:
    if lengths:
        frame = fix_lengths(frame)
    return fix_checksums(frame)


# -- values ------------------------------------------------------------------------------

INTERESTING8 = (0, 1, 2, 4, 7, 8, 0x10, 0x3F, 0x40, 0x7F, 0x80, 0xC0, 0xFE, 0xFF)
INTERESTING16 = (0, 1, 7, 8, 9, 20, 40, 48, 0x7F, 0x80, 0xFF, 0x100, 0x4FF, 0x500, 0x5DC, 0x5DD,
                 0x7FFF, 0x8000, 0xFFF8, 0xFFFE, 0xFFFF)
INTERESTING32 = (0, 1, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFE, 0xFFFFFFFF)
NEXT_HEADERS = (0, 1, 2, 4, 6, 17, 41, 43, 44, 50, 51, 58, 59, 60, 135, 139, 140, 253, 255)
ADDRS6 = tuple(bytes.fromhex(h) for h in (
    "fe80000000000000000000fffe00000a",                  # LL_A
    "fe80000000000000000000000000000b",                  # LL_B
    "20010db8000100000000000000000002",                  # GA_A
    "20010db8000100000000000000000001",                  # GA_B
    "00000000000000000000000000000000",                  # ::
    "00000000000000000000000000000001",                  # ::1
    "ff020000000000000000000000000001",                  # all nodes
    "ff020000000000000000000000000002",                  # all routers
    "ff0200000000000000000001ff00000a",                  # solicited-node of LL_A
    "ff010000000000000000000000000001",                  # interface-local
    "ff000000000000000000000000000001",                  # reserved scope 0
    "ff0e0000000000000000000000000101",                  # global multicast
    "00000000000000000000ffffc0000201",                  # ::ffff:192.0.2.1
    "20010db8000900000000000000000009",                  # off-link
    "fe800000000000000000000000000001",                  # LL_R
))
ADDRS4 = tuple(bytes(b) for b in (
    (192, 0, 2, 2), (192, 0, 2, 1), (127, 0, 0, 1), (0, 0, 0, 0), (255, 255, 255, 255),
    (192, 0, 2, 255), (224, 0, 0, 1), (240, 0, 0, 1), (169, 254, 1, 1), (198, 51, 100, 7),
    (192, 0, 2, 0),
))
MACS = tuple(bytes.fromhex(h) for h in ("02000000000a", "ffffffffffff", "333300000001", "3333ff00000a",
                                         "01005e000001", "02000000000b", "000000000000", "020000000099"))


class Mutator:
    """Turns seed cases into mutants; every choice comes from ``rng``."""

    def __init__(self, rng: random.Random, seeds: list[tuple[str, list[bytes]]]) -> None:
        self.rng = rng
        self.seeds = seeds
        self.ops: list[tuple[int, Callable[[bytes], bytes]]] = [
            (6, self.flip_bits), (10, self.set_field), (3, self.set_nh), (3, self.set_address),
            (4, self.truncate), (3, self.extend), (2, self.insert), (2, self.delete),
            (3, self.nd_option), (2, self.tcp_option), (2, self.ipv4_option), (1, self.set_mac),
            (2, self.hop_limit), (2, self.random_byte),
        ]
        self._op_total = sum(w for w, _ in self.ops)
        self.strategies: list[tuple[int, Callable[[], Case]]] = [
            (40, self.mutate_seed), (8, self.splice), (8, self.ext_chain), (10, self.fragments6),
            (6, self.fragments4), (5, self.random_after_eth), (6, self.random_upper), (8, self.sequence),
            (4, self.nd_zero_option), (5, self.pristine),
        ]
        self._strat_total = sum(w for w, _ in self.strategies)

    # -- entry ------------------------------------------------------------------------------

    def case(self) -> Case:
        r = self.rng.randrange(self._strat_total)
        for w, strat in self.strategies:
            if r < w:
                steps = strat()
                break
            r -= w
        if self.rng.random() < 0.3:
            steps.append(self.rng.choice((1_000_000, 1_000_000_000, 5_000_000_000, 31_000_000_000,
                                          61_000_000_000, 700_000_000_000)))
        return steps

    def _seed(self) -> tuple[str, list[bytes]]:
        return self.rng.choice(self.seeds)

    def _frame(self) -> bytes:
        _, frames = self._seed()
        return self.rng.choice(frames)

    def mutate(self, frame: bytes, rounds: int | None = None) -> bytes:
        rng = self.rng
        for _ in range(rounds if rounds is not None else rng.choice((1, 1, 1, 2, 2, 3, 5))):
            r = rng.randrange(self._op_total)
            for w, op in self.ops:
                if r < w:
                    frame = op(frame)
                    break
                r -= w
        p = rng.random()
        if p < 0.55:
            frame = fixup(frame)
        elif p < 0.8:
            frame = fixup(frame, lengths=False)
        return frame

    # -- strategies -------------------------------------------------------------------------

    def pristine(self) -> Case:
        """An unchanged seed (state changes and counters on the valid path too)."""
        return list(self._seed()[1])

    def mutate_seed(self) -> Case:
        frames = list(self._seed()[1])
        i = self.rng.randrange(len(frames))
        frames[i] = self.mutate(frames[i])
        if len(frames) > 1 and self.rng.random() < 0.3:
            self.rng.shuffle(frames)
        return list(frames)

    def splice(self) -> Case:
        a, b = self._frame(), self._frame()
        i = self.rng.randrange(14, max(15, len(a)))
        j = self.rng.randrange(0, max(1, len(b)))
        out = a[:i] + b[j:]
        return [fixup(out) if self.rng.random() < 0.6 else out]

    def sequence(self) -> Case:
        steps: Case = []
        for _ in range(self.rng.randint(2, 6)):
            _, frames = self._seed()
            for fr in frames:
                steps.append(self.mutate(fr) if self.rng.random() < 0.5 else fr)
            if self.rng.random() < 0.3:
                steps.append(self.rng.choice((100_000_000, 1_000_000_000, 6_000_000_000)))
        return steps

    def ext_chain(self) -> Case:
        """Insert 1..30 extension headers after the IPv6 header of a seed."""
        frame = self._ipv6_frame()
        rng = self.rng
        count = rng.choice((1, 2, 3, 8, 15, 16, 17, 30, rng.randint(1, 30)))
        first_nh = frame[20]
        types = []
        for k in range(count):
            t = rng.choice((60, 60, 43, 0, 44)) if k else rng.choice((0, 60, 43))
            types.append(t)
        hdrs = bytearray()
        for k, t in enumerate(types):
            nh = types[k + 1] if k + 1 < len(types) else first_nh
            hdrs += self._ext_header(t, nh)
        buf = bytearray(frame[:54]) + hdrs + frame[54:]
        buf[20] = types[0]
        out = bytes(buf)
        if rng.random() < 0.2:
            out = self.mutate(out, 1)
        return [fixup(out)]

    def _ext_header(self, t: int, nh: int) -> bytes:
        rng = self.rng
        if t == 44:
            off = rng.choice((0, 0, 8, 0xFFF8))
            return struct.pack(">BBHI", nh, 0, off | rng.choice((0, 1)), rng.getrandbits(32))
        if t == 43:
            rtype = rng.choice((0, 2, 3, 4, 253))
            if rng.random() < 0.7:
                return bytes((nh, 0, rtype, 0, 0, 0, 0, 0))
            segs = rng.randint(1, 3)
            return bytes((nh, 2 * segs, rtype, rng.randint(0, segs), 0, 0, 0, 0)) + bytes(16 * segs)
        # Hop-by-Hop / Destination Options: options of every kind, sometimes lying
        opts = bytearray()
        choice = rng.random()
        if choice < 0.4:
            opts += b"\x01\x04\x00\x00\x00\x00"                       # PadN
        elif choice < 0.55:
            opts += b"\x05\x02\x00\x00" + b"\x01\x00"                 # Router Alert + PadN
        elif choice < 0.8:
            typ = rng.choice((0x3E, 0x7E, 0xBE, 0xFE, 0x1E, 0xC2, 0x04))  # every action class
            opts += bytes((typ, 4)) + bytes(4)
        elif choice < 0.9:
            opts += bytes(6)                                          # Pad1 x 6
        else:
            opts += bytes((1, rng.choice((0, 5, 200, 255)))) + bytes(4)   # length lies
        return bytes((nh, 0)) + bytes(opts)

    def _ipv6_frame(self) -> bytes:
        for _ in range(20):
            fr = self._frame()
            if len(fr) >= 54 and fr[12:14] == b"\x86\xdd" and fr[20] != 44:
                return fr
        return self._frame_for(0x86DD)

    def _frame_for(self, et: int) -> bytes:
        for name, frames in self.seeds:
            if frames[0][12:14] == et.to_bytes(2, "big") and "frag" not in name:
                return frames[0]
        raise AssertionError("no seed")

    def fragments6(self) -> Case:
        """Fragment an IPv6 seed: tiny, overlapping, duplicated, shuffled, incomplete."""
        rng = self.rng
        frame = fixup(self._ipv6_frame())
        hdr, payload = bytearray(frame[14:54]), frame[54:]
        nh = hdr[6]
        ident = rng.choice((0xABCD, 7, rng.getrandbits(32)))
        pieces = self._cut(payload)
        out: Case = []
        for off, data, more in pieces:
            fh = struct.pack(">BBHI", nh, 0, (off & 0xFFF8) | more, ident)
            h = bytearray(hdr)
            h[6] = 44
            _put16(h, 4, 8 + len(data))
            out.append(frame[:14] + bytes(h) + fh + data)
        if rng.random() < 0.2:
            i = rng.randrange(len(out))
            out[i] = self.mutate(bytes(out[i]), 1)
        return out

    def fragments4(self) -> Case:
        rng = self.rng
        frame = b""
        for _ in range(20):
            fr = self._frame()
            if fr[12:14] == b"\x08\x00" and len(fr) >= 34 and not (fr[20] & 0x3F or fr[21]):
                frame = fixup(fr)
                break
        if not frame:
            frame = fixup(self._frame_for(0x0800))
        ihl = (frame[14] & 0x0F) * 4
        hdr, payload = bytearray(frame[14:14 + ihl]), frame[14 + ihl:]
        ident = rng.choice((0x77, rng.getrandbits(16)))
        out: Case = []
        for off, data, more in self._cut(payload):
            h = bytearray(hdr)
            _put16(h, 2, ihl + len(data))
            _put16(h, 4, ident)
            _put16(h, 6, ((off // 8) & 0x1FFF) | (0x2000 if more else 0) | (0x4000 if rng.random() < 0.05 else 0))
            h[10:12] = b"\x00\x00"
            _put16(h, 10, _pure.internet_checksum(bytes(h)))
            out.append(frame[:14] + bytes(h) + data)
        return out

    def _cut(self, payload: bytes) -> list[tuple[int, bytes, int]]:
        """(offset, data, more) pieces of payload, by one of several attack shapes."""
        rng = self.rng
        shape = rng.choice(("normal", "tiny", "overlap", "dup", "missing_last", "odd", "far", "shuffle",
                            "tiny_first", "zero_len"))
        size = 8 if shape in ("tiny", "tiny_first") else rng.choice((8, 16, 24, 48, 64, 512))
        pieces: list[tuple[int, bytes, int]] = []
        off = 0
        while off < len(payload):
            n = size if not (shape == "tiny_first" and off) else 1024
            data = payload[off:off + n]
            pieces.append((off, data, 1))
            off += len(data)
        if not pieces:
            pieces = [(0, b"", 1)]
        o, d, _ = pieces[-1]
        pieces[-1] = (o, d, 0)
        if shape == "overlap" and pieces:
            o, d, _m = rng.choice(pieces)
            pieces.append((max(0, o - 8 * rng.randint(0, 2)), bytes(rng.getrandbits(8) for _ in range(len(d) + 8)),
                           1))
        elif shape == "dup":
            pieces.append(rng.choice(pieces))
        elif shape == "missing_last" and len(pieces) > 1:
            pieces.pop()
        elif shape == "odd" and pieces:
            o, d, _m = pieces[0]
            pieces[0] = (o, d[:-1] if len(d) > 1 else d + b"\x00", 1)
        elif shape == "far":
            pieces.append((0xFFF8, b"\x00" * 16, rng.choice((0, 1))))
        elif shape == "zero_len":
            pieces.insert(rng.randrange(len(pieces) + 1), (rng.choice((0, 8, 64)), b"", rng.choice((0, 1))))
        if shape in ("shuffle", "overlap", "dup") or rng.random() < 0.2:
            rng.shuffle(pieces)
        if len(pieces) > 40:
            pieces = pieces[:40]
        return pieces

    def random_after_eth(self) -> Case:
        rng = self.rng
        et = rng.choice((0x86DD, 0x0800, 0x0806, 0x8100, 0x88CC, rng.getrandbits(16)))
        dst = rng.choice(MACS)
        body = bytes(rng.getrandbits(8) for _ in range(rng.choice((0, 1, 7, 20, 40, 60, rng.randint(0, 300)))))
        return [dst + bytes.fromhex("02000000000b") + et.to_bytes(2, "big") + body]

    def random_upper(self) -> Case:
        """A valid IP header (our addresses) over a random upper layer."""
        rng = self.rng
        proto = rng.choice((6, 17, 58, 1, 0, 43, 44, 60, 59, rng.randrange(256)))
        body = bytearray(rng.getrandbits(8) for _ in range(rng.choice((4, 8, 20, 24, 32, 64, rng.randint(0, 400)))))
        if proto == 58 and len(body) >= 2:
            body[0] = rng.choice((1, 2, 3, 4, 128, 129, 130, 131, 132, 133, 134, 135, 136, 137, 143, 200))
            body[1] = rng.choice((0, 0, 0, 1, 4))
        if proto == 1 and len(body) >= 2:
            body[0] = rng.choice((0, 3, 5, 8, 11, 12, 13))
        eth = b"\x02\x00\x00\x00\x00\x0a\x02\x00\x00\x00\x00\x0b"
        if rng.random() < 0.6:
            src, dst = rng.choice(ADDRS6[:4] + ADDRS6[14:]), rng.choice(ADDRS6)
            hl = 255 if rng.random() < 0.6 else rng.choice((0, 1, 64))
            ip = struct.pack(">IHBB", 0x60000000, len(body), proto, hl) + src + dst
            frame = eth + b"\x86\xdd" + ip + bytes(body)
        else:
            src, dst = rng.choice(ADDRS4[:2]), rng.choice(ADDRS4)
            ip4 = struct.pack(">BBHHHBBH4s4s", 0x45, 0, 20 + len(body), rng.getrandbits(16), 0,
                              rng.choice((1, 64, 255)), proto, 0, src, dst)
            frame = eth + b"\x08\x00" + ip4 + bytes(body)
        return [fixup(frame)]

    def nd_zero_option(self) -> Case:
        """An ND message with a zero-length (or oversized) option inserted."""
        rng = self.rng
        nd = [fr for name, frs in self.seeds for fr in frs
              if name.startswith(("ns", "na", "rs", "ra", "redirect"))]
        frame = rng.choice(nd)
        lay = layout(frame)
        if lay.opt_start < 0:
            return [frame]
        pos = rng.choice((lay.opt_start, len(frame)))
        opt = bytes((rng.choice((1, 2, 3, 5, 14, 25, 99)), rng.choice((0, 0, 1, 2, 255)))) + bytes(6)
        return [fixup(frame[:pos] + opt + frame[pos:])]

    # -- operators ------------------------------------------------------------------------

    def flip_bits(self, frame: bytes) -> bytes:
        if not frame:
            return frame
        buf = bytearray(frame)
        for _ in range(self.rng.choice((1, 1, 2, 4, 8))):
            i = self.rng.randrange(len(buf))
            buf[i] ^= 1 << self.rng.randrange(8)
        return bytes(buf)

    def random_byte(self, frame: bytes) -> bytes:
        if not frame:
            return frame
        buf = bytearray(frame)
        buf[self.rng.randrange(len(buf))] = self.rng.getrandbits(8)
        return bytes(buf)

    def set_field(self, frame: bytes) -> bytes:
        lay = layout(frame)
        if not lay.fields:
            return self.flip_bits(frame)
        off, width = self.rng.choice(lay.fields)
        buf = bytearray(frame)
        if width == 1:
            v = self.rng.choice((*INTERESTING8, self.rng.getrandbits(8)))
        elif width == 2:
            n = len(frame)
            v = self.rng.choice((*INTERESTING16, n - 14, n - 54, n - 53, n - 55, self.rng.getrandbits(16)))
        else:
            v = self.rng.choice((*INTERESTING32, self.rng.getrandbits(32)))
        buf[off:off + width] = (v % (1 << (8 * width))).to_bytes(width, "big")
        return bytes(buf)

    def set_nh(self, frame: bytes) -> bytes:
        lay = layout(frame)
        if not lay.nh_fields:
            return self.set_field(frame)
        buf = bytearray(frame)
        buf[self.rng.choice(lay.nh_fields)] = self.rng.choice(NEXT_HEADERS)
        return bytes(buf)

    def set_address(self, frame: bytes) -> bytes:
        buf = bytearray(frame)
        et = frame[12:14]
        if et == b"\x86\xdd" and len(buf) >= 54:
            o = self.rng.choice((22, 38))
            buf[o:o + 16] = self.rng.choice(ADDRS6)
            lay = layout(frame)
            if lay.proto == 58 and lay.l4 + 24 <= len(buf) and frame[lay.l4] in (135, 136, 137) \
                    and self.rng.random() < 0.5:
                buf[lay.l4 + 8:lay.l4 + 24] = self.rng.choice(ADDRS6)      # ND target
        elif et == b"\x08\x00" and len(buf) >= 34:
            o = self.rng.choice((26, 30))
            buf[o:o + 4] = self.rng.choice(ADDRS4)
        elif et == b"\x08\x06" and len(buf) >= 42:
            o = self.rng.choice((28, 38))
            buf[o:o + 4] = self.rng.choice(ADDRS4)
        else:
            return self.set_mac(frame)
        return bytes(buf)

    def set_mac(self, frame: bytes) -> bytes:
        if len(frame) < 12:
            return frame
        o = self.rng.choice((0, 6))
        return frame[:o] + self.rng.choice(MACS) + frame[o + 6:]

    def hop_limit(self, frame: bytes) -> bytes:
        buf = bytearray(frame)
        if frame[12:14] == b"\x86\xdd" and len(buf) > 21:
            buf[21] = self.rng.choice((0, 1, 2, 64, 254, 255))
        elif frame[12:14] == b"\x08\x00" and len(buf) > 22:
            buf[22] = self.rng.choice((0, 1, 2, 64, 255))
        return bytes(buf)

    def truncate(self, frame: bytes) -> bytes:
        if len(frame) <= 1:
            return frame
        lay = layout(frame)
        cuts = [14, 34, 54, lay.l4, lay.l4 + 1, lay.l4 + 4, lay.l4 + 8, lay.l4 + 20, lay.opt_start,
                self.rng.randrange(len(frame))]
        cut = self.rng.choice([c for c in cuts if 0 < c < len(frame)] or [len(frame) - 1])
        return frame[:cut]

    def extend(self, frame: bytes) -> bytes:
        n = self.rng.choice((1, 2, 7, 8, 16, 64, 1500))
        fill = bytes(n) if self.rng.random() < 0.5 else bytes(self.rng.getrandbits(8) for _ in range(n))
        return frame + fill

    def insert(self, frame: bytes) -> bytes:
        i = self.rng.randrange(len(frame) + 1)
        n = self.rng.choice((1, 2, 4, 8, 16))
        return frame[:i] + bytes(self.rng.getrandbits(8) for _ in range(n)) + frame[i:]

    def delete(self, frame: bytes) -> bytes:
        if len(frame) < 2:
            return frame
        i = self.rng.randrange(len(frame))
        n = self.rng.choice((1, 2, 4, 8, 16))
        return frame[:i] + frame[i + n:]

    def nd_option(self, frame: bytes) -> bytes:
        lay = layout(frame)
        if lay.opt_start < 0 or lay.opt_start + 2 > len(frame):
            return self.set_field(frame)
        buf = bytearray(frame)
        # walk the options and lie in one length (or type)
        offs: list[int] = []
        o = lay.opt_start
        while o + 2 <= len(buf) and len(offs) < 32:
            offs.append(o)
            if buf[o + 1] == 0:
                break
            o += buf[o + 1] * 8
        o = self.rng.choice(offs)
        if self.rng.random() < 0.75:
            buf[o + 1] = self.rng.choice((0, 1, 2, 3, 4, 5, 16, 255))
        else:
            buf[o] = self.rng.choice((0, 1, 2, 3, 4, 5, 14, 24, 25, 31, 255))
        return bytes(buf)

    def tcp_option(self, frame: bytes) -> bytes:
        lay = layout(frame)
        if lay.proto != 6 or lay.l4 < 0 or lay.l4 + 20 > len(frame):
            return self.set_field(frame)
        l4 = lay.l4
        rng = self.rng
        opt = rng.choice((b"\x02\x04\x00\x00", b"\x02\x00", b"\x02\x01", b"\x03\x03\x0f", b"\x03\x03\xff",
                          b"\x04\x02", b"\x05\x02", b"\x05\x0a" + bytes(8), b"\x05\x22" + bytes(32),
                          b"\x08\x0a" + bytes(8), b"\x08\x06" + bytes(4), b"\x1e\xff", b"\x00", b"\x01",
                          bytes((rng.randrange(256), rng.randrange(256)))))
        doff = frame[l4 + 12] >> 4
        old = frame[l4 + 20:l4 + max(20, doff * 4)]
        opts = old + opt if rng.random() < 0.5 else opt + old
        opts = opts + bytes(-len(opts) % 4)
        if len(opts) > 40:
            opts = opts[:40]
        buf = bytearray(frame[:l4 + 20]) + opts + frame[l4 + max(20, doff * 4):]
        buf[l4 + 12] = ((20 + len(opts)) // 4) << 4 | (buf[l4 + 12] & 0x0F)
        return bytes(buf)

    def ipv4_option(self, frame: bytes) -> bytes:
        if frame[12:14] != b"\x08\x00" or len(frame) < 34:
            return self.set_field(frame)
        rng = self.rng
        ihl = (frame[14] & 0x0F) * 4
        opt = rng.choice((b"\x94\x04\x00\x00", b"\x07\x07\x04" + bytes(4), b"\x07\x03\x04",
                          b"\x83\x07\x04\xc0\x00\x02\x01", b"\x89\x03\x04", b"\x44\x0c\x05\x00" + bytes(8),
                          b"\x01\x01\x01", b"\x00", b"\x07\x00", b"\x07\x01", b"\x07\xff", b"\x83\x02",
                          b"\x86\x08" + bytes(6), bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 12)))))
        opts = frame[34:14 + ihl] + opt
        opts = opts + bytes(-len(opts) % 4)
        opts = opts[:40]
        buf = bytearray(frame[:34]) + opts + frame[14 + ihl:]
        buf[14] = 0x40 | (20 + len(opts)) // 4
        return bytes(buf)
