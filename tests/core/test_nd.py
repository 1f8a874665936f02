"""NUD state machine, one case per row of the transition table (RFC 4861 App. C)."""

from __future__ import annotations

import random
from dataclasses import dataclass

import pytest

from stack.core.clock import s
from stack.core.nd import (
    DELAY_FIRST_PROBE_TIME,
    GC_STALE_TIME,
    MAX_MULTICAST_SOLICIT,
    MAX_UNICAST_SOLICIT,
    Fail,
    Flush,
    NeighborCache,
    NudState,
    Pending,
    Solicit,
)

IFX = 2
ADDR = bytes.fromhex("fe80000000000000000000000000000b")
MAC_B = bytes.fromhex("02000000000b")
MAC_X = bytes.fromhex("02000000000c")
T0 = s(100)
REACHABLE = s(30)
RETRANS = s(1)
P = Pending(0x86DD, b"packet-1")

INC, R, ST, D, PR = (NudState.INCOMPLETE, NudState.REACHABLE, NudState.STALE, NudState.DELAY,
                   NudState.PROBE)


def cache_in(state: NudState) -> NeighborCache:
    c = NeighborCache(random.Random(1))
    c.set_params(IFX, REACHABLE, RETRANS)
    if state is INC:
        c.resolve(IFX, ADDR, P, T0)
        return c
    c.resolve(IFX, ADDR, P, T0)
    c.on_advertisement(IFX, ADDR, MAC_B, T0, solicited=True, override=False, is_router=False)
    e = c.get(IFX, ADDR)
    assert e is not None and e.state is R
    if state is R:
        return c
    c.poll(T0 + REACHABLE)
    assert e.state is ST
    if state is ST:
        return c
    c.resolve(IFX, ADDR, P, T0 + REACHABLE)
    assert e.state is D
    if state is D:
        return c
    c.poll(T0 + REACHABLE + DELAY_FIRST_PROBE_TIME)
    assert e.state is PR
    return c


def now_of(c: NeighborCache) -> int:
    e = c.get(IFX, ADDR)
    assert e is not None
    return e.updated_at


@dataclass(frozen=True)
class Advert:
    solicited: bool
    override: bool
    lladdr: bytes | None = MAC_B

    def apply(self, c: NeighborCache) -> list:  # type: ignore[type-arg]
        return c.on_advertisement(IFX, ADDR, self.lladdr, now_of(c), solicited=self.solicited,
                                  override=self.override, is_router=False)


@dataclass(frozen=True)
class Solicitation:
    lladdr: bytes = MAC_B

    def apply(self, c: NeighborCache) -> list:  # type: ignore[type-arg]
        return c.on_solicitation(IFX, ADDR, self.lladdr, now_of(c))


@dataclass(frozen=True)
class Elapse:
    d: int

    def apply(self, c: NeighborCache) -> list:  # type: ignore[type-arg]
        e = c.get(IFX, ADDR)
        assert e is not None and e.timer_at is not None
        return c.poll(e.timer_at)


@dataclass(frozen=True)
class Send:
    def apply(self, c: NeighborCache) -> list:  # type: ignore[type-arg]
        _, acts = c.resolve(IFX, ADDR, Pending(0x86DD, b"packet-2"), now_of(c))
        return acts


@dataclass(frozen=True)
class Confirm:
    def apply(self, c: NeighborCache) -> list:  # type: ignore[type-arg]
        c.confirm(IFX, ADDR, now_of(c))
        return []


def row(name: str, start: NudState, event: object, end: NudState, emits: type | None) -> object:
    return pytest.param(start, event, end, emits, id=name)


# One row per transition of RFC 4861 Appendix C (and §7.3.1 confirmations), named after it.
ROWS = [
    row("INCOMPLETE-NA_S1-REACHABLE_flush", INC, Advert(solicited=True, override=False), R, Flush),
    row("INCOMPLETE-NA_S0-STALE_flush", INC, Advert(solicited=False, override=True), ST, Flush),
    row("INCOMPLETE-NA_without_lladdr-unchanged", INC, Advert(solicited=True, override=True, lladdr=None),
        INC, None),
    row("INCOMPLETE-NS_with_lladdr-STALE_flush", INC, Solicitation(), ST, Flush),
    row("INCOMPLETE-retrans_timeout-INCOMPLETE_solicit", INC, Elapse(RETRANS), INC, Solicit),
    row("REACHABLE-timeout-STALE", R, Elapse(REACHABLE), ST, None),
    row("REACHABLE-NA_S0_O0_other_lladdr-STALE", R, Advert(solicited=False, override=False, lladdr=MAC_X),
        ST, None),
    row("REACHABLE-NA_S1_O0_other_lladdr-STALE", R, Advert(solicited=True, override=False, lladdr=MAC_X),
        ST, None),
    row("REACHABLE-NA_S1_O1_other_lladdr-REACHABLE", R, Advert(solicited=True, override=True, lladdr=MAC_X),
        R, None),
    row("REACHABLE-NA_S0_O1_same_lladdr-unchanged", R, Advert(solicited=False, override=True), R, None),
    row("REACHABLE-NA_S0_no_lladdr-unchanged", R, Advert(solicited=False, override=False, lladdr=None),
        R, None),
    row("REACHABLE-NS_other_lladdr-STALE", R, Solicitation(MAC_X), ST, None),
    row("REACHABLE-NS_same_lladdr-unchanged", R, Solicitation(MAC_B), R, None),
    row("REACHABLE-confirmation-REACHABLE", R, Confirm(), R, None),
    row("STALE-send-DELAY", ST, Send(), D, None),
    row("STALE-NA_S1_O0_same_lladdr-REACHABLE", ST, Advert(solicited=True, override=False), R, None),
    row("STALE-NA_S0_O0_other_lladdr-unchanged", ST, Advert(solicited=False, override=False, lladdr=MAC_X),
        ST, None),
    row("STALE-NA_S0_O1_other_lladdr-STALE_updated", ST, Advert(solicited=False, override=True, lladdr=MAC_X),
        ST, None),
    row("STALE-NA_S0_O1_same_lladdr-unchanged", ST, Advert(solicited=False, override=True), ST, None),
    row("STALE-NS_other_lladdr-STALE_updated", ST, Solicitation(MAC_X), ST, None),
    row("STALE-NS_same_lladdr-unchanged", ST, Solicitation(MAC_B), ST, None),
    row("STALE-confirmation-REACHABLE", ST, Confirm(), R, None),
    row("DELAY-confirmation-REACHABLE", D, Confirm(), R, None),
    row("DELAY-timeout-PROBE_unicast_solicit", D, Elapse(DELAY_FIRST_PROBE_TIME), PR, Solicit),
    row("DELAY-NA_S1_no_lladdr-REACHABLE", D, Advert(solicited=True, override=False, lladdr=None), R, None),
    row("DELAY-NA_S1_O0_other_lladdr-unchanged", D, Advert(solicited=True, override=False, lladdr=MAC_X),
        D, None),
    row("DELAY-NA_S0_O1_other_lladdr-STALE", D, Advert(solicited=False, override=True, lladdr=MAC_X),
        ST, None),
    row("DELAY-NS_other_lladdr-STALE", D, Solicitation(MAC_X), ST, None),
    row("DELAY-send-unchanged", D, Send(), D, None),
    row("PROBE-NA_S1_no_lladdr-REACHABLE", PR, Advert(solicited=True, override=False, lladdr=None), R, None),
    row("PROBE-NA_S1_O0_same_lladdr-REACHABLE", PR, Advert(solicited=True, override=False), R, None),
    row("PROBE-retrans_timeout-PROBE_unicast_solicit", PR, Elapse(RETRANS), PR, Solicit),
    row("PROBE-NA_S0_O0_other_lladdr-unchanged", PR, Advert(solicited=False, override=False, lladdr=MAC_X),
        PR, None),
    row("PROBE-NA_S0_O1_other_lladdr-STALE", PR, Advert(solicited=False, override=True, lladdr=MAC_X),
        ST, None),
    row("PROBE-NS_other_lladdr-STALE", PR, Solicitation(MAC_X), ST, None),
    row("PROBE-confirmation-REACHABLE", PR, Confirm(), R, None),
    row("PROBE-send-unchanged", PR, Send(), PR, None),
]


@pytest.mark.parametrize("start, event, end, emits", ROWS)
def test_nud_transition(start: NudState, event: object, end: NudState, emits: type | None) -> None:
    c = cache_in(start)
    acts = event.apply(c)  # type: ignore[attr-defined]
    e = c.get(IFX, ADDR)
    assert e is not None and e.state is end
    if emits is None:
        assert acts == []
    else:
        assert [type(a) for a in acts] == [emits]


def test_incomplete_queues_in_order_and_flushes_all_on_advert() -> None:
    c = cache_in(INC)
    for i in range(2, 6):
        mac, acts = c.resolve(IFX, ADDR, Pending(0x86DD, f"packet-{i}".encode()), T0)
        assert mac is None and acts == []
    [flush] = c.on_advertisement(IFX, ADDR, MAC_B, T0, solicited=True, override=False, is_router=False)
    assert isinstance(flush, Flush) and flush.lladdr == MAC_B
    assert [p.packet for p in flush.packets] == [f"packet-{i}".encode() for i in range(1, 6)]


def test_queue_is_bounded_and_drops_oldest() -> None:
    c = NeighborCache(random.Random(1), queue_max=3)
    for i in range(5):
        c.resolve(IFX, ADDR, Pending(0x86DD, bytes([i])), T0)
    e = c.get(IFX, ADDR)
    assert e is not None and [p.packet for p in e.queue] == [b"\x02", b"\x03", b"\x04"]
    assert c.queue_drops == 2


def test_incomplete_gives_up_after_max_multicast_solicit_and_fails_queue() -> None:
    c = cache_in(INC)
    c.resolve(IFX, ADDR, Pending(0x86DD, b"packet-2"), T0)
    solicits = 1
    t = T0
    for _ in range(MAX_MULTICAST_SOLICIT - 1):
        t += RETRANS
        [sol] = c.poll(t)
        assert isinstance(sol, Solicit) and sol.lladdr is None
        solicits += 1
    assert solicits == MAX_MULTICAST_SOLICIT
    [fail] = c.poll(t + RETRANS)
    assert isinstance(fail, Fail)
    assert [p.packet for p in fail.packets] == [b"packet-1", b"packet-2"]
    assert c.get(IFX, ADDR) is None


def test_probe_is_unicast_and_entry_deleted_after_max_unicast_solicit() -> None:
    c = cache_in(PR)
    e = c.get(IFX, ADDR)
    assert e is not None
    sent = 1
    while True:
        assert e.timer_at is not None
        acts = c.poll(e.timer_at)
        if c.get(IFX, ADDR) is None:
            break
        [sol] = acts
        assert isinstance(sol, Solicit) and sol.lladdr == MAC_B
        sent += 1
    assert sent == MAX_UNICAST_SOLICIT


def test_advert_without_entry_creates_nothing() -> None:
    c = NeighborCache(random.Random(1))
    assert c.on_advertisement(IFX, ADDR, MAC_B, T0, solicited=False, override=True, is_router=False) == []
    assert c.get(IFX, ADDR) is None


def test_solicitation_creates_stale_entry() -> None:
    c = NeighborCache(random.Random(1))
    c.on_solicitation(IFX, ADDR, MAC_B, T0)
    e = c.get(IFX, ADDR)
    assert e is not None and e.state is ST and e.lladdr == MAC_B


def test_upper_layer_confirmation_keeps_reachable_without_probes() -> None:
    c = cache_in(R)
    e = c.get(IFX, ADDR)
    assert e is not None
    t = T0
    for _ in range(10):
        t += REACHABLE // 2
        c.confirm(IFX, ADDR, t)
        assert c.poll(t) == [] and e.state is R


def test_permanent_entries_ignore_everything() -> None:
    c = NeighborCache(random.Random(1))
    c.add_permanent(IFX, ADDR, MAC_B, T0)
    c.on_advertisement(IFX, ADDR, MAC_X, T0, solicited=True, override=True, is_router=True)
    c.on_solicitation(IFX, ADDR, MAC_X, T0)
    e = c.get(IFX, ADDR)
    assert e is not None and e.state is NudState.PERMANENT and e.lladdr == MAC_B
    assert c.poll_at() is None


def test_cache_bound_evicts_incomplete_then_stale_never_reachable() -> None:
    c = NeighborCache(random.Random(1), max_entries=4)
    c.set_params(IFX, REACHABLE, RETRANS)
    active = [bytes(15) + bytes([i]) for i in (1, 2)]
    for a in active:
        c.resolve(IFX, a, P, T0)
        c.on_advertisement(IFX, a, MAC_B, T0, solicited=True, override=True, is_router=False)
    for i in range(100, 1100):
        c.resolve(IFX, bytes(14) + i.to_bytes(2, "big"), P, T0 + i)
    assert len(c.entries) == 4
    for a in active:
        e = c.get(IFX, a)
        assert e is not None and e.state is R
    assert c.evictions >= 998


def test_reachable_time_is_randomized_within_rfc_bounds() -> None:
    rng = random.Random(7)
    values = {NeighborCache.random_reachable_time(rng, s(30)) for _ in range(200)}
    assert all(s(15) <= v <= s(45) for v in values)
    assert len(values) > 100


def test_no_entry_send_creates_incomplete_queues_and_solicits_multicast() -> None:
    c = NeighborCache(random.Random(1))
    mac, acts = c.resolve(IFX, ADDR, P, T0)
    e = c.get(IFX, ADDR)
    assert mac is None and e is not None and e.state is INC and list(e.queue) == [P]
    assert acts == [Solicit(IFX, ADDR, None, None)]
    assert c.poll_at() == T0 + s(1)        # RetransTimer


def test_stale_unused_for_gc_stale_time_is_deleted() -> None:
    c = cache_in(ST)
    e = c.get(IFX, ADDR)
    assert e is not None
    entered = e.updated_at
    assert c.poll_at() == entered + GC_STALE_TIME
    assert c.poll(entered + GC_STALE_TIME - 1) == [] and c.get(IFX, ADDR) is e
    assert c.poll(entered + GC_STALE_TIME) == []           # nothing to send: just forgotten
    assert c.get(IFX, ADDR) is None and c.gc_collected == 1
    assert c.poll_at() is None


def test_stale_entry_that_is_used_is_not_collected() -> None:
    c = cache_in(ST)
    e = c.get(IFX, ADDR)
    assert e is not None
    t = e.updated_at + GC_STALE_TIME - s(1)
    c.resolve(IFX, ADDR, P, t)                              # sent through: DELAY
    c.on_advertisement(IFX, ADDR, MAC_B, t, solicited=True, override=False, is_router=False)
    c.poll(e.updated_at + s(1))
    assert c.get(IFX, ADDR) is e and e.state is R
    assert c.gc_collected == 0


def test_stale_router_entry_is_not_collected() -> None:
    c = cache_in(ST)
    e = c.get(IFX, ADDR)
    assert e is not None
    e.is_router = True
    c.poll(e.updated_at + 3 * GC_STALE_TIME)
    assert c.get(IFX, ADDR) is e and e.state is ST


def test_gc_stale_time_and_delay_first_probe_time_are_per_interface() -> None:
    c = NeighborCache(random.Random(1))
    c.set_params(IFX, REACHABLE, RETRANS, delay_first_probe_time=s(2), gc_stale_time=s(7))
    c.on_solicitation(IFX, ADDR, MAC_B, T0)
    assert c.poll_at() == T0 + s(7)
    c.resolve(IFX, ADDR, P, T0 + s(1))
    e = c.get(IFX, ADDR)
    assert e is not None and e.state is D and e.timer_at == T0 + s(3)
    c.on_solicitation(IFX + 1, ADDR, MAC_B, T0)           # another interface: the defaults
    e2 = c.get(IFX + 1, ADDR)
    assert e2 is not None and e2.timer_at == T0 + GC_STALE_TIME


def test_confirmations_do_not_grow_the_timer_heap() -> None:
    c = cache_in(R)
    e = c.get(IFX, ADDR)
    assert e is not None
    for i in range(10_000):
        c.confirm(IFX, ADDR, T0 + i)
    assert len(c._timers) <= 2
    c.poll(T0 + REACHABLE)                                   # confirmed at T0+9999 ns: still valid
    assert e.state is R and e.timer_at == T0 + 9_999 + REACHABLE
    c.poll(T0 + 9_999 + REACHABLE)
    assert e.state is ST


def test_timer_heap_is_bounded_by_the_cache_size() -> None:
    """Entries re-armed many times (NA storms) or removed leave dead heap items;
    the heap is rebuilt before they outnumber live entries, and poll_at skips them."""
    c = NeighborCache(random.Random(1), max_entries=100)
    c.set_params(IFX, REACHABLE, RETRANS)
    addrs = [bytes(15) + bytes([i]) for i in range(50)]
    for a in addrs:
        c.resolve(IFX, a, P, T0)
    for rnd in range(20):
        for a in addrs:
            c.on_advertisement(IFX, a, MAC_B, T0 + rnd, solicited=True, override=True, is_router=False)
        assert len(c._timers) <= 2 * len(c.entries) + 64
    for a in addrs[:40]:
        c.remove(IFX, a)
    assert c.poll_at() == T0 + 19 + REACHABLE
    assert len(c.poll(T0 + 19 + REACHABLE)) == 0 and all(c.get(IFX, a).state is ST  # type: ignore[union-attr]
                                                         for a in addrs[40:])


def test_flush_removes_dynamic_entries_and_counts_waiting_packets() -> None:
    from stack.core.stats import Drop, Stats

    stats = Stats()
    c = NeighborCache(random.Random(1), stats=stats)
    c.set_params(IFX, REACHABLE, RETRANS)
    other = bytes(15) + b"\x09"
    c.resolve(IFX, ADDR, P, T0)
    c.resolve(IFX, ADDR, P, T0)                           # two packets waiting
    c.add_permanent(IFX, other, MAC_B, T0)
    c.on_solicitation(IFX + 1, ADDR, MAC_B, T0)           # on another interface
    assert c.flush(IFX) == 1
    assert c.get(IFX, ADDR) is None and c.get(IFX, other) is not None and c.get(IFX + 1, ADDR) is not None
    assert stats[Drop.ND_FLUSHED] == 2
    assert c.poll(T0 + s(10)) == []                       # no retransmission for a flushed entry
    assert c.flush() == 1 and c.get(IFX, other) is not None
