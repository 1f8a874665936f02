"""Multicast Listener Discovery: the listener (host) side of MLDv2 (RFC 3810 §6)
with MLDv1 compatibility (RFC 3810 §8.2.1, RFC 2710 §4).

Owns, per interface: the pending State Change records (sent on join and leave,
[Robustness Variable] transmissions in all), the pending responses to queries
(the interface timer for General Queries, one timer per multicast address for
Multicast Address Specific Queries) and the Host Compatibility Mode. Every
group the interface has joined is reported except ff02::1 and scopes 0/1
(§6: never reported). Our filter is always EXCLUDE({}) ("all sources"), so a
State Change record is TO_EX({}) on join and TO_IN({}) on leave, and a Current
State record is IS_EX({}) (or IS_IN(queried sources) for a source-specific query,
§6.3).

Reports go to ff02::16 (MLDv1: Reports to the group, Done to ff02::2) with hop
limit 1 and a Router Alert (§5.2.13, RFC 2711), from the link-local address,
or from :: while none is usable yet (§5.2.13; RFC 3590 §4: once one is, every
group is reported again).

Timers are ``*_at`` fields; ``poll_at()``/``poll(now)``. Randomness comes from
``stack.rng`` only.

Transitions (input -> effect):

    join G (new on the interface)  -> TO_EX(G) now, then RV-1 more at random (0, URI]
    leave G (last reference)       -> TO_IN(G) likewise (MLDv1 mode: one Done)
    General Query, delay d         -> interface timer = d unless one is due sooner (§6.2 1, 2)
    Address Specific Query for G   -> G's timer = min(timer, d) (§6.2 3, 4)
    timer due                      -> Current State Report
    MLDv1 Query                    -> MLDv1 mode for Older Version Querier Present
                                      Timeout; pending timers cancelled (§8.2.1)
    MLDv1 Report for G (v1 mode)   -> G's timer cancelled (RFC 2710 §4 suppression)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from stack.core.clock import s
from stack.core.interface import Interface
from stack.core.stats import Drop
from stack.wire import ndp
from stack.wire.addr import (
    ALL_MLDV2_ROUTERS,
    ALL_NODES,
    ALL_ROUTERS,
    UNSPECIFIED6,
    is_link_local6,
    is_multicast6,
    is_unspecified,
    multicast_mac,
    multicast_scope,
)
from stack.wire.errors import ParseError
from stack.wire.frame_types import PROTO_HOPOPTS, PROTO_ICMPV6, Frame
from stack.wire.icmpv6 import build_icmpv6
from stack.wire.ipv6 import OPT_ROUTER_ALERT

if TYPE_CHECKING:
    from stack.core.stack import Stack

MLD_QUERY, MLDV1_REPORT, MLDV1_DONE, MLDV2_REPORT = 130, 131, 132, 143

ROBUSTNESS = 2                              # §9.1 [Robustness Variable]
QUERY_INTERVAL = s(125)                     # §9.2
QUERY_RESPONSE_INTERVAL = s(10)             # §9.3
UNSOLICITED_REPORT_INTERVAL = s(1)          # §9.11
V1_UNSOLICITED_REPORT_INTERVAL = s(10)      # RFC 2710 §7.10
# §9.12: [Robustness Variable] x [Query Interval] + [Query Response Interval]
OLDER_VERSION_QUERIER_PRESENT_TIMEOUT = ROBUSTNESS * QUERY_INTERVAL + QUERY_RESPONSE_INTERVAL
MAX_QUERIED_SOURCES = 64                    # per pending source-specific response
# IPv6 header + Hop-by-Hop with Router Alert + ICMPv6/report header
_REPORT_OVERHEAD = 40 + 8 + 8
_RECORD_LEN = 20


@dataclass(slots=True)
class Change:
    """A State Change record still to be (re)transmitted."""

    record: int          # ndp.CHANGE_TO_EXCLUDE (join) or ndp.CHANGE_TO_INCLUDE (leave)
    left: int            # transmissions still due


@dataclass(slots=True)
class Pending:
    """A pending response to a Multicast Address (and Source) Specific Query."""

    at: int
    sources: set[bytes] | None     # None: the whole address (IS_EX({}))


@dataclass(slots=True)
class IfListener:
    """MLD state of one interface (RFC 3810 §4, §6)."""

    changes: dict[bytes, Change] = field(default_factory=dict)
    change_at: int | None = None           # next State Change Report
    general_at: int | None = None          # the interface timer (§6.2)
    queried: dict[bytes, Pending] = field(default_factory=dict)   # multicast address timers
    v1_until: int | None = None            # Older Version Querier Present (§8.2.1)
    robustness: int = ROBUSTNESS           # the querier's QRV when it sent one (§5.1.8)

    @property
    def v1(self) -> bool:
        return self.v1_until is not None

    def deadlines(self) -> list[int]:
        times = [t for t in (self.change_at, self.general_at, self.v1_until) if t is not None]
        times.extend(p.at for p in self.queried.values())
        return times


def reportable(group: bytes) -> bool:
    """§6: no MLD for ff02::1 nor for reserved/interface-local scopes."""
    return is_multicast6(group) and group != ALL_NODES and multicast_scope(group) >= 2


class MldListener:
    def __init__(self, stack: Stack) -> None:
        self.st = stack
        self.ifs: dict[int, IfListener] = {}

    def _state(self, iface: Interface) -> IfListener:
        state = self.ifs.get(iface.ifindex)
        if state is None:
            state = self.ifs[iface.ifindex] = IfListener()
        return state

    # -- the service interface (§3): join / leave ---------------------------------

    def join(self, iface: Interface, group: bytes, now: int) -> None:
        """The interface's listening state for group went INCLUDE({}) -> EXCLUDE({})."""
        if iface.loopback or not reportable(group):
            return
        state = self._state(iface)
        state.changes[group] = Change(ndp.CHANGE_TO_EXCLUDE, state.robustness)
        self._change_soon(state, now)

    def leave(self, iface: Interface, group: bytes, now: int) -> None:
        """EXCLUDE({}) -> INCLUDE({}): the last reference went away."""
        if iface.loopback or not reportable(group):
            return
        state = self._state(iface)
        state.queried.pop(group, None)
        # §6.1: TO_IN({}) [Robustness Variable] times; MLDv1 (RFC 2710 §4): one Done.
        state.changes[group] = Change(ndp.CHANGE_TO_INCLUDE, 1 if state.v1 else state.robustness)
        self._change_soon(state, now)

    def link_local_ready(self, iface: Interface, now: int) -> None:
        """RFC 3590 §4: reports sent from :: may have been ignored; now that a
        link-local source exists, report every group again."""
        if iface.loopback:
            return
        state = self._state(iface)
        for group in iface.groups6:
            if reportable(group):
                state.changes[group] = Change(ndp.CHANGE_TO_EXCLUDE, state.robustness)
        if state.changes:
            self._change_soon(state, now)

    @staticmethod
    def _change_soon(state: IfListener, now: int) -> None:
        # §6.1: "immediately"; pending records of one interface leave in one report.
        state.change_at = now if state.change_at is None else min(state.change_at, now)

    # -- input (§6.2) ----------------------------------------------------------------

    def handle(self, rcvif: Interface, f: Frame, now: int) -> None:
        st = self.st
        t = f.icmp_type
        st.stats.count("mld", f"in_type_{t}")
        if t == MLD_QUERY:
            self._query(rcvif, f, now)
        elif t == MLDV1_REPORT:
            self._v1_report(rcvif, f)
        # Done and MLDv2 Reports are for routers; a listener ignores them (§6).

    def _query(self, rcvif: Interface, f: Frame, now: int) -> None:
        st = self.st
        # §6.2: link-local source, hop limit 1, Router Alert; else dropped.
        if f.hop_limit != 1:
            st.stats.drop(Drop.MLD_BAD_HOP_LIMIT)
            return
        if not is_link_local6(f.src):
            st.stats.drop(Drop.MLD_BAD_SOURCE)
            return
        if not has_router_alert(f):
            st.stats.drop(Drop.MLD_NO_ROUTER_ALERT)
            return
        try:
            q = ndp.parse_mld_query(f.buf, f.l4_off, f.ip_end)
        except ParseError:
            st.stats.drop(Drop.MLD_BAD)              # §8.1: neither 24 nor >= 28 bytes
            return
        if not is_unspecified(q.group) and not is_multicast6(q.group):
            st.stats.drop(Drop.MLD_BAD)
            return
        state = self._state(rcvif)
        if q.version == 1:
            if not state.v1:
                # §8.2.1: switching to MLDv1 cancels all pending response and
                # retransmission timers.
                state.changes.clear()
                state.change_at = state.general_at = None
                state.queried.clear()
                st.note("info", f"{rcvif.name}: MLDv1 querier present, MLDv1 compatibility mode")
            state.v1_until = now + OLDER_VERSION_QUERIER_PRESENT_TIMEOUT
        elif q.qrv:
            state.robustness = q.qrv                 # §5.1.8: adopt the querier's QRV
        delay = self.st.rng.randint(0, q.max_resp_delay * 1_000_000)   # §6.2: [0, Max Resp Delay]
        at = now + delay
        general = is_unspecified(q.group)
        if state.v1:
            # RFC 2710 §4: one timer per address; reset only when the new delay is shorter.
            groups = list(rcvif.groups6) if general else [q.group]
            for g in groups:
                if g in rcvif.groups6 and reportable(g):
                    self._arm(state, g, at, None)
            return
        # §6.2 rule 1: a General Query response due sooner covers this query.
        if state.general_at is not None and state.general_at <= at:
            st.stats.count("mld", "query_covered")
            return
        if general:
            state.general_at = at                    # rule 2: replaces a pending one
            return
        if q.group not in rcvif.groups6 or not reportable(q.group):
            st.stats.count("mld", "query_other_group")
            return
        self._arm(state, q.group, at, q.sources)     # rules 3 and 4

    @staticmethod
    def _arm(state: IfListener, group: bytes, at: int, sources: tuple[bytes, ...] | None) -> None:
        pending = state.queried.get(group)
        if pending is None:
            state.queried[group] = Pending(at, set(sources) if sources else None)
            return
        pending.at = min(pending.at, at)
        # §6.2 rule 4: a source list is kept only while every query asked for sources.
        if pending.sources is None or not sources:
            pending.sources = None
        else:
            pending.sources.update(sources)
            if len(pending.sources) > MAX_QUERIED_SOURCES:
                pending.sources = None

    def _v1_report(self, rcvif: Interface, f: Frame) -> None:
        state = self.ifs.get(rcvif.ifindex)
        if state is None or not state.v1 or f.l4_len < 24:
            return
        group = bytes(f.buf[f.l4_off + 8 : f.l4_off + 24])
        # RFC 2710 §4: another listener answered for this address: stay quiet.
        if state.queried.pop(group, None) is not None:
            self.st.stats.count("mld", "v1_report_suppressed")

    # -- timers -------------------------------------------------------------------------

    def poll_at(self) -> int | None:
        best: int | None = None
        for state in self.ifs.values():     # state.deadlines() without the lists: runs per batch
            for t in (state.change_at, state.general_at, state.v1_until):
                if t is not None and (best is None or t < best):
                    best = t
            for p in state.queried.values():
                if best is None or p.at < best:
                    best = p.at
        return best

    def poll(self, now: int) -> None:
        for ifx, state in list(self.ifs.items()):
            iface = self.st.interfaces.get(ifx)
            if iface is None:
                del self.ifs[ifx]
                continue
            if state.v1_until is not None and state.v1_until <= now:
                state.v1_until = None                # §8.2.1: back to MLDv2
                self.st.note("info", f"{iface.name}: MLDv1 querier gone, back to MLDv2")
            if state.change_at is not None and state.change_at <= now:
                self._send_changes(iface, state, now)
            if state.general_at is not None and state.general_at <= now:
                state.general_at = None
                groups = sorted(g for g in iface.groups6 if reportable(g))
                self._send_v2(iface, [(ndp.MODE_IS_EXCLUDE, g, ()) for g in groups], now)
            if state.queried:
                due = sorted(g for g, p in state.queried.items() if p.at <= now)
                if due:
                    self._send_current(iface, state, due, now)

    def _send_changes(self, iface: Interface, state: IfListener, now: int) -> None:
        records: list[tuple[int, bytes, tuple[bytes, ...]]] = []
        for group, change in list(state.changes.items()):
            records.append((change.record, group, ()))
            change.left -= 1
            if change.left <= 0:
                del state.changes[group]
        if state.v1:
            for rtype, group, _ in records:
                if rtype == ndp.CHANGE_TO_EXCLUDE:
                    self._send_v1(iface, MLDV1_REPORT, group, group, now)
                else:
                    self._send_v1(iface, MLDV1_DONE, ALL_ROUTERS, group, now)
        else:
            self._send_v2(iface, records, now)
        if state.changes:
            # §6.1: retransmissions at random in (0, [Unsolicited Report Interval]).
            interval = V1_UNSOLICITED_REPORT_INTERVAL if state.v1 else UNSOLICITED_REPORT_INTERVAL
            state.change_at = now + self.st.rng.randint(1, interval)
        else:
            state.change_at = None

    def _send_current(self, iface: Interface, state: IfListener, due: list[bytes], now: int) -> None:
        records: list[tuple[int, bytes, tuple[bytes, ...]]] = []
        for group in due:
            pending = state.queried.pop(group)
            if group not in iface.groups6:
                continue
            if state.v1:
                self._send_v1(iface, MLDV1_REPORT, group, group, now)
            elif pending.sources is None:
                records.append((ndp.MODE_IS_EXCLUDE, group, ()))
            else:
                # §6.3: EXCLUDE({}) listens to every queried source: IS_IN(queried).
                records.append((ndp.MODE_IS_INCLUDE, group, tuple(sorted(pending.sources))))
        if records:
            self._send_v2(iface, records, now)

    # -- output (§5.2) ------------------------------------------------------------------

    def _source(self, iface: Interface) -> bytes:
        ll = iface.link_local()
        return ll.addr if ll is not None else UNSPECIFIED6   # §5.2.13

    def _sendable(self, iface: Interface) -> bool:
        return iface.up and not iface.ipv6_disabled and not iface.loopback

    def _send_v2(self, iface: Interface, records: list[tuple[int, bytes, tuple[bytes, ...]]],
                 now: int) -> None:
        if not records or not self._sendable(iface):
            return
        src = self._source(iface)
        room = iface.mtu - _REPORT_OVERHEAD
        batch: list[tuple[int, bytes, tuple[bytes, ...]]] = []
        used = 0
        for rec in records:
            size = _RECORD_LEN + 16 * len(rec[2])
            if batch and used + size > room:
                self._emit(iface, src, ALL_MLDV2_ROUTERS, ndp.build_mldv2_report(src, batch), now)
                batch, used = [], 0
            batch.append(rec)
            used += size
        self._emit(iface, src, ALL_MLDV2_ROUTERS, ndp.build_mldv2_report(src, batch), now)

    def _send_v1(self, iface: Interface, mtype: int, dst: bytes, group: bytes, now: int) -> None:
        """RFC 2710 §3: Report to the address itself, Done to ff02::2."""
        if not self._sendable(iface):
            return
        src = self._source(iface)
        self._emit(iface, src, dst, build_icmpv6(src, dst, mtype, 0, bytes(4) + group), now)

    def _emit(self, iface: Interface, src: bytes, dst: bytes, msg: bytes, now: int) -> None:
        self.st.stats.count("mld", f"out_type_{msg[0]}")
        self.st.ip6.send_raw(iface.ifindex, multicast_mac(dst), src, dst, PROTO_ICMPV6, msg, now,
                             hop_limit=1, router_alert=True)


def has_router_alert(f: Frame) -> bool:
    """A Router Alert option (RFC 2711) in the Hop-by-Hop Options header."""
    buf = f.buf
    for typ, off, length in f.ext:
        if typ != PROTO_HOPOPTS:
            continue
        i, end = off + 2, off + length
        while i < end:
            opt = buf[i]
            if opt == 0:
                i += 1
                continue
            if i + 1 >= end:
                break
            if opt == OPT_ROUTER_ALERT:
                return True
            i += 2 + buf[i + 1]
    return False
