"""Neighbor cache and Neighbor Unreachability Detection, RFC 4861 §7.2–7.3, App. C.

Keys are ``(ifindex, ipv6_addr)``; IPv4 packets routed via an IPv6 next hop
(RFC 5549/8950) use the same entries. The cache never builds frames: its methods
return instructions (``Solicit``, ``Flush``, ``Fail``) that the stack turns into
frames, so NUD is tested without packets.

Transitions (state, input -> state, output):

    (none)      packet to send        -> INCOMPLETE  queue it; Solicit (multicast)
    INCOMPLETE  retrans timeout <3    -> INCOMPLETE  Solicit (multicast)
    INCOMPLETE  3rd timeout           -> (deleted)   Fail(queue): address unreachable
    INCOMPLETE  NA solicited          -> REACHABLE   Flush(queue)
    INCOMPLETE  NA unsolicited / NS / RS / RA / Redirect with lladdr
                                      -> STALE       Flush(queue)
    REACHABLE   ReachableTime passed  -> STALE       (unless confirmed meanwhile)
    REACHABLE   upper-layer confirmation -> REACHABLE (deadline moved, no new timer)
    STALE       packet to send        -> DELAY       send
    DELAY       confirmation          -> REACHABLE
    DELAY       DELAY_FIRST_PROBE_TIME-> PROBE       Solicit (unicast)
    PROBE       retrans timeout <3    -> PROBE       Solicit (unicast)
    PROBE       3rd timeout           -> (deleted)
    any but INCOMPLETE, NA S=1 (same lladdr or O=1)
                                      -> REACHABLE
    REACHABLE   NA O=0 different lladdr -> STALE     (lladdr kept)
    any         NA O=1 different lladdr S=0 -> STALE (lladdr updated)
    any         NS/RS/RA with different lladdr -> STALE (lladdr updated)
    STALE       gc_stale_time unused  -> (deleted)   (Linux gc_staletime; not routers)
    PERMANENT   anything              -> PERMANENT

Packets waiting in INCOMPLETE are kept on the entry (at most ``queue_max``,
oldest dropped first), as illumos keeps them with ``nce_queue_mp`` and releases
them in ``nce_resolv_ok``; on failure each one yields an ICMPv6 Destination
Unreachable code 3 to its sender (§7.2.2).

Timers: every armed deadline is also pushed on a heap ``(time, seq, entry)``;
an item is live while the entry is still in the cache with that ``timer_at``
(lazy deletion, rebuilt when dead items outnumber live entries), so
``poll_at`` is O(1) amortized and ``poll`` touches only due entries.
An upper-layer confirmation does not re-arm: it moves ``reachable_until`` and
the REACHABLE timer, when it fires, re-arms once for the rest.
"""

from __future__ import annotations

import enum
import heapq
import itertools
import random
from collections import deque
from dataclasses import dataclass, field
from operator import attrgetter
from typing import NamedTuple

from stack.core.clock import s
from stack.core.stats import Drop, Stats

MAX_MULTICAST_SOLICIT = 3
MAX_UNICAST_SOLICIT = 3
DELAY_FIRST_PROBE_TIME = s(5)
GC_STALE_TIME = s(60)           # Linux neigh gc_stale_time: unused STALE entries go
_REACHABLE_DEFAULT = s(30)     # a link's REACHABLE_TIME until set_params gives one
MIN_RANDOM_FACTOR = 0.5
MAX_RANDOM_FACTOR = 1.5
_USED_AT = attrgetter("used_at")


class NudState(enum.Enum):
    INCOMPLETE = "INCOMPLETE"
    REACHABLE = "REACHABLE"
    STALE = "STALE"
    DELAY = "DELAY"
    PROBE = "PROBE"
    PERMANENT = "PERMANENT"

    # Singletons compared by identity: hashed by identity too (as TcpState). Enum's own
    # __hash__ is Python code, run by the ``state in _SEND_STATES`` test of every packet sent.
    __hash__ = object.__hash__


_SEND_STATES = frozenset((NudState.REACHABLE, NudState.DELAY, NudState.PROBE, NudState.PERMANENT))


class Pending(NamedTuple):
    """A packet waiting for resolution: the IP packet and its ethertype."""

    ethertype: int
    packet: bytes


class Solicit(NamedTuple):
    """Send an NS for ``target`` on ``ifindex``; unicast to ``lladdr`` when given."""

    ifindex: int
    target: bytes
    lladdr: bytes | None
    src_hint: bytes | None   # §7.2.2: source of the packet that prompted it


class Flush(NamedTuple):
    """Resolution succeeded: send every queued packet to ``lladdr``, in order."""

    ifindex: int
    target: bytes
    lladdr: bytes
    packets: list[Pending]


class Fail(NamedTuple):
    """Resolution failed: every queued packet gets 'address unreachable'."""

    ifindex: int
    target: bytes
    packets: list[Pending]


Action = Solicit | Flush | Fail


@dataclass(slots=True)
class NeighborEntry:
    ifindex: int
    addr: bytes
    state: NudState
    lladdr: bytes | None = None
    is_router: bool = False
    timer_at: int | None = None     # the one deadline of the current state
    probes: int = 0                 # solicitations sent in INCOMPLETE/PROBE
    queue: deque[Pending] = field(default_factory=deque)
    used_at: int = 0                # last time a packet was sent through it
    updated_at: int = 0             # last state change
    src_hint: bytes | None = None
    reachable_until: int = 0        # REACHABLE: confirmed reachable until then


class NeighborCache:
    """All neighbor entries of a stack.

    ``reachable_time(ifindex)`` and ``retrans_timer(ifindex)`` come from the
    interface's ND parameters (updated from RAs); ``max_entries`` bounds memory.
    """

    def __init__(self, rng: random.Random, *, max_entries: int = 2048, queue_max: int = 16,
                 stats: Stats | None = None) -> None:
        self.rng = rng
        self.stats = stats          # packets the cache discards are counted drops
        self.max_entries = max_entries
        self.queue_max = queue_max
        self.entries: dict[tuple[int, bytes], NeighborEntry] = {}
        self.retrans: dict[int, int] = {}
        self.reachable: dict[int, int] = {}
        self.delay: dict[int, int] = {}
        self.gc_stale: dict[int, int] = {}
        self._timers: list[tuple[int, int, NeighborEntry]] = []
        self._seq = itertools.count()
        self.gc_collected = 0
        self.queue_drops = 0
        self.evictions = 0
        self.on_transition: list[object] = []   # (entry, old_state) -> None, for trace/logging
        self.transitions: list[tuple[NeighborEntry, NudState | None, int]] = []
        # +1 on every state, link-layer address or membership change (Stack.flow_epoch)
        self.epoch = 0

    # -- parameters ------------------------------------------------------

    def set_params(self, ifindex: int, reachable_time: int, retrans_timer: int,
                   delay_first_probe_time: int | None = None,
                   gc_stale_time: int | None = None) -> None:
        """ND timing of one interface (ns); None keeps the current value.
        New values apply from the next state change (as Linux)."""
        self.reachable[ifindex] = reachable_time
        self.retrans[ifindex] = retrans_timer
        if delay_first_probe_time is not None:
            self.delay[ifindex] = delay_first_probe_time
        if gc_stale_time is not None:
            self.gc_stale[ifindex] = gc_stale_time

    def _retrans(self, ifindex: int) -> int:
        return self.retrans.get(ifindex, s(1))

    def _reachable(self, ifindex: int) -> int:
        return self.reachable.get(ifindex, _REACHABLE_DEFAULT)

    def _arm(self, e: NeighborEntry, at: int | None) -> None:
        e.timer_at = at
        if at is None:
            return
        heapq.heappush(self._timers, (at, next(self._seq), e))
        if len(self._timers) > 2 * len(self.entries) + 64:
            self._timers = [(x.timer_at, next(self._seq), x) for x in self.entries.values()
                            if x.timer_at is not None]
            heapq.heapify(self._timers)

    def _live(self, at: int, e: NeighborEntry) -> bool:
        return e.timer_at == at and self.entries.get((e.ifindex, e.addr)) is e

    @staticmethod
    def random_reachable_time(rng: random.Random, base: int) -> int:
        """§6.3.2: uniformly random in [MIN_RANDOM_FACTOR, MAX_RANDOM_FACTOR] x base."""
        return int(base * rng.uniform(MIN_RANDOM_FACTOR, MAX_RANDOM_FACTOR))

    # -- state changes ---------------------------------------------------

    def _enter(self, e: NeighborEntry, state: NudState, now: int) -> None:
        old = e.state
        self.epoch += 1
        e.state = state
        e.updated_at = now
        if state is NudState.REACHABLE:
            e.reachable_until = now + self._reachable(e.ifindex)
            self._arm(e, e.reachable_until)
        elif state is NudState.DELAY:
            self._arm(e, now + self.delay.get(e.ifindex, DELAY_FIRST_PROBE_TIME))
        elif state in (NudState.INCOMPLETE, NudState.PROBE):
            self._arm(e, now + self._retrans(e.ifindex))
        elif state is NudState.STALE:
            # Collected when unused for gc_stale_time (sending moves it to DELAY),
            # or earlier under cache pressure (_evict).
            self._arm(e, now + self.gc_stale.get(e.ifindex, GC_STALE_TIME))
        else:  # PERMANENT: no timer
            e.timer_at = None
        if old is not state:
            self.transitions.append((e, old, len(e.queue)))

    def get(self, ifindex: int, addr: bytes) -> NeighborEntry | None:
        return self.entries.get((ifindex, addr))

    def _create(self, ifindex: int, addr: bytes, state: NudState, now: int) -> NeighborEntry | None:
        if len(self.entries) >= self.max_entries and not self._evict(now):
            return None
        e = NeighborEntry(ifindex, addr, state, updated_at=now, used_at=now)
        self.entries[(ifindex, addr)] = e
        self.transitions.append((e, None, 0))
        return e

    def _evict(self, now: int) -> bool:
        """Make room: oldest INCOMPLETE first, then the least recently used STALE.

        Entries in REACHABLE/DELAY/PROBE are in active use and PERMANENT ones are
        configuration: they are never evicted (a flood cannot push them out).
        One scan frees up to 1/32 of the cache, so that a flood of new neighbors
        costs an amortized O(32) per entry, not a scan of the whole cache each.
        """
        batch = max(1, self.max_entries // 32)
        victims: list[NeighborEntry] = []
        for wanted in (NudState.INCOMPLETE, NudState.STALE):
            candidates = [e for e in self.entries.values() if e.state is wanted]
            victims += heapq.nsmallest(batch - len(victims), candidates, key=_USED_AT)
            if len(victims) == batch:
                break
        for v in victims:
            if v.queue and self.stats is not None:
                self.stats.drop(Drop.ND_CACHE_FULL, len(v.queue))   # its waiting packets
            del self.entries[(v.ifindex, v.addr)]
            self.epoch += 1
            self.evictions += 1
        return bool(victims)

    def add_permanent(self, ifindex: int, addr: bytes, lladdr: bytes, now: int) -> NeighborEntry:
        e = self.entries.get((ifindex, addr))
        if e is None:
            e = NeighborEntry(ifindex, addr, NudState.PERMANENT, updated_at=now)
            self.entries[(ifindex, addr)] = e
        e.lladdr = lladdr
        self.epoch += 1
        e.state = NudState.PERMANENT
        e.timer_at = None
        return e

    def remove(self, ifindex: int, addr: bytes) -> NeighborEntry | None:
        self.epoch += 1
        return self.entries.pop((ifindex, addr), None)

    def flush(self, ifindex: int | None = None) -> int:
        """Remove dynamic entries (all interfaces or one); PERMANENT ones stay."""
        victims = [k for k, e in self.entries.items()
                   if (ifindex is None or e.ifindex == ifindex) and e.state is not NudState.PERMANENT]
        for k in victims:
            e = self.entries.pop(k)
            self.epoch += 1
            if e.queue and self.stats is not None:
                self.stats.drop(Drop.ND_FLUSHED, len(e.queue))   # waiting packets go with it
        return len(victims)

    def remove_interface(self, ifindex: int) -> None:
        for k in [k for k in self.entries if k[0] == ifindex]:
            del self.entries[k]
            self.epoch += 1

    # -- inputs ----------------------------------------------------------

    def lladdr_for(self, ifindex: int, addr: bytes, now: int) -> bytes | None:
        """``resolve``'s answer when it is a plain "send to this lladdr" with no state
        change (REACHABLE, DELAY, PROBE, PERMANENT), else None: then call ``resolve``.
        The per-packet fast path (no Pending built, no transition to trace)."""
        e = self.entries.get((ifindex, addr))
        if e is None or e.state not in _SEND_STATES:
            return None
        e.used_at = now
        return e.lladdr

    def resolve(self, ifindex: int, addr: bytes, pending: Pending, now: int,
                src_hint: bytes | None = None) -> tuple[bytes | None, list[Action]]:
        """A packet wants to go to addr. Returns (lladdr or None if queued, actions).

        §7.2.2 (no entry: create INCOMPLETE, queue, solicit), §7.3.3 (STALE: send
        and go to DELAY).
        """
        e = self.entries.get((ifindex, addr))
        if e is None:
            e = self._create(ifindex, addr, NudState.INCOMPLETE, now)
            if e is None:
                return None, [Fail(ifindex, addr, [pending])]
            e.src_hint = src_hint
            e.queue.append(pending)
            e.probes = 1
            self._enter(e, NudState.INCOMPLETE, now)
            return None, [Solicit(ifindex, addr, None, src_hint)]
        e.used_at = now
        st = e.state
        if st is NudState.INCOMPLETE:
            if len(e.queue) >= self.queue_max:
                e.queue.popleft()   # §7.2.2: the new packet replaces the oldest
                self.queue_drops += 1
                if self.stats is not None:
                    self.stats.drop(Drop.ND_QUEUE_OVERFLOW)
            e.queue.append(pending)
            return None, []
        if st is NudState.STALE:
            self._enter(e, NudState.DELAY, now)
            return e.lladdr, []
        if st in (NudState.REACHABLE, NudState.DELAY, NudState.PROBE, NudState.PERMANENT):
            return e.lladdr, []
        raise AssertionError(st)

    def on_solicitation(self, ifindex: int, addr: bytes, lladdr: bytes, now: int) -> list[Action]:
        """An NS (or RS, RA, Redirect) from addr carried its link-layer address (§7.2.3)."""
        e = self.entries.get((ifindex, addr))
        if e is None:
            e = self._create(ifindex, addr, NudState.STALE, now)
            if e is None:
                return []
            e.lladdr = lladdr
            self.epoch += 1
            self._enter(e, NudState.STALE, now)
            return []
        return self._learn_unconfirmed(e, lladdr, now)

    def _learn_unconfirmed(self, e: NeighborEntry, lladdr: bytes, now: int) -> list[Action]:
        st = e.state
        if st is NudState.PERMANENT:
            return []
        if st is NudState.INCOMPLETE:
            e.lladdr = lladdr
            self.epoch += 1
            self._enter(e, NudState.STALE, now)
            return [self._flush(e)]
        if st in (NudState.REACHABLE, NudState.STALE, NudState.DELAY, NudState.PROBE):
            if e.lladdr != lladdr:
                e.lladdr = lladdr
                self.epoch += 1
                self._enter(e, NudState.STALE, now)
            return []
        raise AssertionError(st)

    def on_advertisement(self, ifindex: int, addr: bytes, lladdr: bytes | None, now: int, *,
                         solicited: bool, override: bool, is_router: bool) -> list[Action]:
        """§7.2.5: Neighbor Advertisement for addr. Returns actions; counts nothing."""
        e = self.entries.get((ifindex, addr))
        if e is None:
            return []   # §7.2.5: no entry -> silently discard (no new entry)
        st = e.state
        if st is NudState.PERMANENT:
            return []
        if st is NudState.INCOMPLETE:
            if lladdr is None:
                return []   # §7.2.5: no TLLAO while INCOMPLETE: discard
            e.lladdr = lladdr
            self.epoch += 1
            e.is_router = is_router
            self._enter(e, NudState.REACHABLE if solicited else NudState.STALE, now)
            return [self._flush(e)]
        if st in (NudState.REACHABLE, NudState.STALE, NudState.DELAY, NudState.PROBE):
            changed = lladdr is not None and lladdr != e.lladdr
            if not override and changed:
                # §7.2.5: O=0 with a different address: REACHABLE -> STALE, else ignore.
                if st is NudState.REACHABLE:
                    self._enter(e, NudState.STALE, now)
                return []
            if lladdr is not None:
                e.lladdr = lladdr
                self.epoch += 1
            if solicited:
                self._enter(e, NudState.REACHABLE, now)
            elif changed:
                self._enter(e, NudState.STALE, now)
            e.is_router = is_router
            return []
        raise AssertionError(st)

    def confirm(self, ifindex: int, addr: bytes, now: int) -> None:
        """Upper-layer reachability confirmation (§7.3.1), e.g. TCP forward progress."""
        e = self.entries.get((ifindex, addr))
        if e is None:
            return
        state = e.state
        if state is NudState.REACHABLE:
            # the common case (TCP confirms on every ACK that advances SND.UNA) first, with
            # _reachable inlined; the timer re-arms lazily
            e.reachable_until = now + self.reachable.get(ifindex, _REACHABLE_DEFAULT)
            return
        if state is NudState.INCOMPLETE or state is NudState.PERMANENT:
            return
        self._enter(e, NudState.REACHABLE, now)

    def _flush(self, e: NeighborEntry) -> Flush:
        assert e.lladdr is not None
        packets = list(e.queue)
        e.queue.clear()
        return Flush(e.ifindex, e.addr, e.lladdr, packets)

    # -- timers ----------------------------------------------------------

    def poll_at(self) -> int | None:
        h = self._timers
        while h:
            at, _, e = h[0]
            if self._live(at, e):
                return at
            heapq.heappop(h)
        return None

    def poll(self, now: int) -> list[Action]:
        actions: list[Action] = []
        h = self._timers
        while h and h[0][0] <= now:
            at, _, e = heapq.heappop(h)
            if self._live(at, e):
                actions.extend(self._expire(e, now))
        return actions

    def _expire(self, e: NeighborEntry, now: int) -> list[Action]:
        st = e.state
        if st is NudState.INCOMPLETE:
            if e.probes < MAX_MULTICAST_SOLICIT:
                e.probes += 1
                self._arm(e, now + self._retrans(e.ifindex))
                return [Solicit(e.ifindex, e.addr, None, e.src_hint)]
            del self.entries[(e.ifindex, e.addr)]
            self.epoch += 1
            self.transitions.append((e, st, -1))
            packets = list(e.queue)
            e.queue.clear()
            return [Fail(e.ifindex, e.addr, packets)]
        if st is NudState.REACHABLE:
            if e.reachable_until > now:     # confirmed meanwhile (§7.3.1)
                self._arm(e, e.reachable_until)
            else:
                self._enter(e, NudState.STALE, now)
            return []
        if st is NudState.DELAY:
            e.probes = 1
            self._enter(e, NudState.PROBE, now)
            return [Solicit(e.ifindex, e.addr, e.lladdr, None)]
        if st is NudState.PROBE:
            if e.probes < MAX_UNICAST_SOLICIT:
                e.probes += 1
                self._arm(e, now + self._retrans(e.ifindex))
                return [Solicit(e.ifindex, e.addr, e.lladdr, None)]
            del self.entries[(e.ifindex, e.addr)]
            self.epoch += 1
            self.transitions.append((e, st, -1))
            return []
        if st is NudState.STALE:
            if e.is_router:   # a default router's entry stays (§6.3.6 ranks by it)
                self._arm(e, now + self.gc_stale.get(e.ifindex, GC_STALE_TIME))
                return []
            del self.entries[(e.ifindex, e.addr)]
            self.epoch += 1
            self.gc_collected += 1
            return []
        if st is NudState.PERMANENT:
            e.timer_at = None
            return []
        raise AssertionError(st)
