"""Test helpers for the TCP engine: feed/expect on one connection, a fake IpService,
and a seeded virtual wire between two TcpLayers (smoltcp send!/recv!, netsim)."""

from __future__ import annotations

import errno
import heapq
import random
from collections.abc import Callable
from typing import Any

from stack.core.events import Readable
from stack.core.ipservice import OutRoute, RouteError
from stack.core.stats import Stats
from stack.core.tcp.connection import TcpConnection
from stack.core.tcp.layer import TcpLayer
from stack.core.tcp.tcb import TcpConfig, TcpState
from stack.wire.addr import ip6, needs_zone
from stack.wire.checksum import ones_sum, pseudo_sum4, pseudo_sum6
from stack.wire.frame_types import ETHERTYPE_IPV4, ETHERTYPE_IPV6, PROTO_TCP, Frame
from stack.wire.tcp import TcpSegment, parse_flags, parse_tcp

ISS = 1000
IRS = 5000
LOCAL = ip6("2001:db8:1::2")
REMOTE = ip6("2001:db8:1::1")
LPORT = 7
RPORT = 40000
MSS = 1440                      # 1500 - 40 - 20
PEER_MSS = 1460
NO_OPTS = TcpConfig(timestamps=False, sack=False, window_scaling=False)
SACK_ONLY = TcpConfig(timestamps=False, sack=True, window_scaling=False)


class _Any:
    def __repr__(self) -> str:
        return "ANY"


ANY: Any = _Any()


def seg(flags: str = "A", seq: Any = ANY, ack: Any = ANY, window: Any = ANY, payload: bytes = b"", *,
        mss: Any = ANY, wscale: Any = ANY, sack_permitted: Any = ANY, sack: Any = ANY,
        ts: Any = ANY) -> TcpSegment:
    """A segment spec: for feed(), ANY means the default; for expect(), don't care."""
    seq = seq if seq is ANY else seq & 0xFFFFFFFF
    ack = ack if ack is ANY else ack & 0xFFFFFFFF
    return TcpSegment(seq, ack, parse_flags(flags), window, payload, 0, mss, wscale,
                      sack_permitted, sack, ts)


_FEED_DEFAULTS = {"seq": 0, "ack": 0, "window": 65535, "mss": None, "wscale": None, "sack_permitted": False,
                  "sack_blocks": (), "ts": None}


def concrete(s: TcpSegment) -> TcpSegment:
    return s._replace(**{k: v for k, v in _FEED_DEFAULTS.items() if getattr(s, k) is ANY})


def feed(c: TcpConnection, s: TcpSegment, at: int) -> None:
    c.on_segment(concrete(s), at)


def matches(actual: TcpSegment, want: TcpSegment) -> bool:
    return all(w is ANY or a == w for a, w in zip(actual, want, strict=True))


def expect(c: TcpConnection, want: list[TcpSegment], at: int) -> list[TcpSegment]:
    got = c.dispatch(at)
    ok = len(got) == len(want) and all(matches(a, w) for a, w in zip(got, want, strict=True))
    assert ok, f"got {[g.describe() for g in got]!r}\nwant {[w.describe() for w in want]!r}\nfull {got!r}"
    return got


def events(c: TcpConnection) -> list[object]:
    return c._emit.__self__  # type: ignore[attr-defined,no-any-return]


def make(config: TcpConfig = NO_OPTS, iss: int = ISS, mss_local: int = MSS) -> TcpConnection:
    log: list[object] = []
    return TcpConnection(local=LOCAL, lport=LPORT, remote=REMOTE, rport=RPORT, zone=0, iss=iss,
                         mss_local=mss_local, config=config, stats=Stats(), emit=log.append)


def syn_received(config: TcpConfig = NO_OPTS, window: int = 65535, **opts: Any) -> TcpConnection:
    c = make(config)
    c.open_passive(concrete(seg("S", seq=IRS, window=window, mss=opts.pop("mss", PEER_MSS), **opts)), 0)
    c.dispatch(0)
    assert c.state is TcpState.SYN_RECEIVED
    return c


def established(config: TcpConfig = NO_OPTS, window: int = 65535, **opts: Any) -> TcpConnection:
    c = syn_received(config, window=window, **opts)
    feed(c, seg("A", seq=IRS + 1, ack=ISS + 1, window=window), at=0)
    assert c.dispatch(0) == [] and c.state is TcpState.ESTABLISHED
    return c


def syn_sent(config: TcpConfig = NO_OPTS) -> TcpConnection:
    c = make(config)
    c.open_active(0)
    c.dispatch(0)
    return c


def run_timers(c: TcpConnection, until: int) -> None:
    """Fire every deadline up to ``until``, dropping what is sent."""
    while (t := c.poll_at()) is not None and t <= until:
        c.poll(t)
        c.dispatch(t)


def readable_count(c: TcpConnection) -> int:
    return sum(isinstance(e, Readable) for e in events(c))


# --- a fake IP: one interface, routes to everything ---------------------------

class FakeIp:
    """IpService for tests: records what is sent, routes everything on ifindex 2."""

    def __init__(self, addrs: list[bytes], rng: random.Random | None = None, mtu: int = 1500) -> None:
        self.stats = Stats()
        self.rng = rng or random.Random(1)
        self.addrs = addrs
        self.mtu = mtu
        self.gen = 1
        self.sent: list[tuple[OutRoute, bytes, bool]] = []
        self.events: list[object] = []
        self.confirmed = 0
        self.unreachable: set[bytes] = set()
        self.on_send: Callable[[OutRoute, bytes, int], None] | None = None

    def route_output(self, dst: bytes, zone: int, src: bytes | None, now: int) -> OutRoute:
        if dst in self.unreachable:
            raise RouteError(errno.ENETUNREACH)
        if src is None:
            src = next(a for a in self.addrs if len(a) == len(dst))
        return OutRoute(dst, zone if needs_zone(dst) else 0, src, zone if needs_zone(src) else 0,
                        2, 2, dst, 0, self.mtu, self.gen, False)

    def route_valid(self, route: OutRoute) -> bool:
        return route.gen == self.gen

    def ip_send(self, route: OutRoute, proto: int, l4: bytes, now: int, *, cached: bool = False,
                tclass: int = 0, hop_limit: int | None = None) -> None:
        assert proto == PROTO_TCP
        self.sent.append((route, l4, cached))
        if self.on_send is not None:
            self.on_send(route, l4, now)

    def confirm_reachable(self, route: OutRoute, now: int) -> None:
        self.confirmed += 1

    def is_local_address(self, addr: bytes, zone: int) -> bool:
        return addr in self.addrs

    def emit(self, event: object) -> None:
        self.events.append(event)

    def take(self) -> list[TcpSegment]:
        out = [parse_tcp(l4, 0, len(l4)) for _r, l4, _c in self.sent]
        self.sent.clear()
        return out


def tcp_frame(src: bytes, dst: bytes, l4: bytes) -> Frame:
    """A Frame as IP would hand it to TCP (checksum verdict computed here)."""
    pseudo = (pseudo_sum6 if len(src) == 16 else pseudo_sum4)(src, dst, len(l4), PROTO_TCP)
    ok = len(l4) >= 20 and ones_sum(l4, pseudo) == 0xFFFF
    sport = int.from_bytes(l4[0:2], "big") if len(l4) >= 4 else 0
    dport = int.from_bytes(l4[2:4], "big") if len(l4) >= 4 else 0
    return Frame(l4, b"", b"", ETHERTYPE_IPV6 if len(src) == 16 else ETHERTYPE_IPV4, 6 if len(src) == 16 else 4,
                 0, src, dst, 64, 0, 0, len(l4), PROTO_TCP, 0, (), False, 0, False, 0, False,
                 sport, dport, 0, 0, ok)


# --- two layers over a seeded lossy wire ---------------------------------------

class Wire:
    """Delivers segments between two FakeIps after a delay, with seeded loss and jitter
    (jitter reorders). Virtual time only."""

    def __init__(self, seed: int, loss: float = 0.0, delay: int = 1_000_000, jitter: int = 0,
                 rate_bps: int = 0) -> None:
        self.rng = random.Random(seed)
        self.loss = loss
        self.delay = delay
        self.jitter = jitter
        self.rate_bps = rate_bps
        self.queue: list[tuple[int, int, TcpLayer, Frame]] = []
        self.n = 0
        self.dropped = 0
        self.delivered = 0
        self.busy_until: dict[int, int] = {}

    def attach(self, a: FakeIp, la: TcpLayer, b: FakeIp, lb: TcpLayer) -> None:
        a.on_send = lambda route, l4, now: self._send(route, l4, now, lb, 0)
        b.on_send = lambda route, l4, now: self._send(route, l4, now, la, 1)

    def _send(self, route: OutRoute, l4: bytes, now: int, to: TcpLayer, direction: int) -> None:
        if self.loss and self.rng.random() < self.loss:
            self.dropped += 1
            return
        start = now
        if self.rate_bps:
            start = max(now, self.busy_until.get(direction, 0))
            self.busy_until[direction] = start + (len(l4) + 60) * 8 * 1_000_000_000 // self.rate_bps
        at = start + self.delay + (self.rng.randrange(self.jitter) if self.jitter else 0)
        self.n += 1
        heapq.heappush(self.queue, (at, self.n, to, tcp_frame(route.src, route.dst, l4)))

    def next_at(self) -> int | None:
        return self.queue[0][0] if self.queue else None

    def deliver_due(self, now: int) -> None:
        while self.queue and self.queue[0][0] <= now:
            _at, _n, to, frame = heapq.heappop(self.queue)
            self.delivered += 1
            to.handle(frame, 2, now)


def run_until(done: Callable[[], bool], wire: Wire, layers: list[TcpLayer], now: int, limit: int,
              step: Callable[[int], None] | None = None) -> int:
    """Jump virtual time to the next delivery or deadline until ``done()``; returns the time."""
    while not done():
        candidates = [t for t in [wire.next_at(), *(la.poll_at() for la in layers)] if t is not None]
        if not candidates:
            raise AssertionError("idle before done")
        now = max(now, min(candidates))
        if now > limit:
            raise AssertionError(f"not done by {limit}")
        wire.deliver_due(now)
        for la in layers:
            la.poll(now)
        if step is not None:
            step(now)
            for la in layers:
                la.poll(now)
    return now
