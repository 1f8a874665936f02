"""NUD state machine, one case per row of the transition table (RFC 4861 App. C)."""

from __future__ import annotations

import random
from dataclasses import dataclass

import pytest

from stack.core.clock import s
from stack.core.nd import (
    DELAY_FIRST_PROBE_TIME,
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


ROWS = [
    (INC, Advert(solicited=True, override=False), R, Flush),
    (INC, Advert(solicited=False, override=True), ST, Flush),
    (INC, Advert(solicited=True, override=True, lladdr=None), INC, None),
    (INC, Solicitation(), ST, Flush),
    (INC, Elapse(RETRANS), INC, Solicit),
    (R, Elapse(REACHABLE), ST, None),
    (R, Advert(solicited=False, override=False, lladdr=MAC_X), ST, None),
    (R, Advert(solicited=True, override=True, lladdr=MAC_X), R, None),
    (R, Solicitation(MAC_X), ST, None),
    (R, Solicitation(MAC_B), R, None),
    (ST, Send(), D, None),
    (ST, Advert(solicited=True, override=False), R, None),
    (ST, Advert(solicited=False, override=False, lladdr=MAC_X), ST, None),
    (ST, Advert(solicited=False, override=True, lladdr=MAC_X), ST, None),
    (D, Confirm(), R, None),
    (D, Elapse(DELAY_FIRST_PROBE_TIME), PR, Solicit),
    (D, Advert(solicited=True, override=False, lladdr=None), R, None),
    (PR, Advert(solicited=True, override=False, lladdr=None), R, None),
    (PR, Advert(solicited=True, override=False), R, None),
    (PR, Elapse(RETRANS), PR, Solicit),
    (PR, Advert(solicited=False, override=False, lladdr=MAC_X), PR, None),
]


@pytest.mark.parametrize("start, event, end, emits", ROWS, ids=lambda v: str(v))
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
        acts = c.poll(t)
        assert [type(a) for a in acts] == [Solicit] and acts[0].lladdr is None
        solicits += 1
    assert solicits == MAX_MULTICAST_SOLICIT
    acts = c.poll(t + RETRANS)
    assert [type(a) for a in acts] == [Fail]
    assert [p.packet for p in acts[0].packets] == [b"packet-1", b"packet-2"]
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
        assert [type(a) for a in acts] == [Solicit] and acts[0].lladdr == MAC_B
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
