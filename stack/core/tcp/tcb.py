"""The TCP control block: states, configuration, variables, segment forming.

RFC 9293 §3.3.1 (the TCB variables, named as there: ``snd_una``, ``snd_nxt``,
``snd_wnd``, ``snd_wl1``, ``snd_wl2``, ``iss``, ``rcv_nxt``, ``irs``), §3.3.2
(states), §3.8.6.2.2 (receiver silly window avoidance), RFC 7323 §2.3-2.4
(window scaling; the advertised right edge never moves left) and §3.2
(timestamps on every segment), RFC 2018 §3-4 (SACK blocks on ACKs).

Sequence numbers are unwrapped ints (``seq.py``); ``snd_nxt`` is also the
highest sequence number sent so far (SND.MAX: it never moves back, loss
recovery tracks retransmissions in ``congestion.py`` instead, as Linux does).
This module only forms segments; when to send them is ``output.py``'s job,
what to do with arriving ones ``connection.py``'s.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING

from stack.core.clock import ms, s
from stack.core.stats import Stats
from stack.core.tcp.buffers import ReassemblyQueue, ReceiveBuffer, SendBuffer, TcpMemory
from stack.core.tcp.congestion import Congestion
from stack.core.tcp.rtt import TS_MASK, TS_TICK_NS, RttEstimator, ts_clock
from stack.wire.tcp import ACK, SYN, TS_OPTION_LEN, TcpSegment

if TYPE_CHECKING:
    from stack.core.ipservice import OutRoute

_new = tuple.__new__            # TcpSegment without its Python-level __new__ (per segment)


class TcpState(Enum):
    """RFC 9293 §3.3.2 connection states."""

    CLOSED = "CLOSED"
    LISTEN = "LISTEN"
    SYN_SENT = "SYN-SENT"
    SYN_RECEIVED = "SYN-RECEIVED"
    ESTABLISHED = "ESTABLISHED"
    FIN_WAIT_1 = "FIN-WAIT-1"
    FIN_WAIT_2 = "FIN-WAIT-2"
    CLOSE_WAIT = "CLOSE-WAIT"
    CLOSING = "CLOSING"
    LAST_ACK = "LAST-ACK"
    TIME_WAIT = "TIME-WAIT"

    # Members are singletons compared by identity: hash them by identity too. Enum's own
    # __hash__ (hash of the name) is Python code, run for every ``state in SENDING``-style
    # test, ~15 times per short connection.
    __hash__ = object.__hash__


SYNCHRONIZED = frozenset({
    TcpState.ESTABLISHED, TcpState.FIN_WAIT_1, TcpState.FIN_WAIT_2, TcpState.CLOSE_WAIT,
    TcpState.CLOSING, TcpState.LAST_ACK, TcpState.TIME_WAIT,
})
# States in which data (and our FIN) may still have to be (re)transmitted.
SENDING = frozenset({
    TcpState.ESTABLISHED, TcpState.CLOSE_WAIT, TcpState.FIN_WAIT_1, TcpState.CLOSING, TcpState.LAST_ACK,
})
# States in which arriving text is delivered (RFC 9293 §3.10.7.4 seventh).
RECEIVING = frozenset({TcpState.ESTABLISHED, TcpState.FIN_WAIT_1, TcpState.FIN_WAIT_2})

DEFAULT_MSS4 = 536      # RFC 9293 §3.7.1 / RFC 1122 4.2.2.6
DEFAULT_MSS6 = 1220     # RFC 8200 §8.3: 1280 - 40 - 20
MIN_MSS = 64


@dataclass(frozen=True, slots=True)
class TcpConfig:
    """Tunables, defaults close to Linux's. Durations in ns."""

    rcv_buf: int = 1024 * 1024       # Stack sets both from limits.tcp_rcvbuf / tcp_sndbuf
    snd_buf: int = 1024 * 1024
    msl: int = s(30)                    # TIME-WAIT lasts 2*MSL (RFC 9293 §3.4.2)
    delayed_ack: int = ms(40)           # RFC 9293 §3.8.6.3 / RFC 5681 §4.2: < 500 ms
    rto_initial: int = s(1)
    rto_min: int = ms(200)
    rto_max: int = s(120)
    syn_retries: int = 6
    synack_retries: int = 5
    max_retries: int = 15               # RFC 1122 4.2.3.5 R2, Linux tcp_retries2
    fin_wait2_timeout: int = s(60)      # orphaned FIN-WAIT-2 (Linux tcp_fin_timeout)
    keepalive: bool = False             # RFC 1122 4.2.3.6: off by default
    keepalive_idle: int = s(7200)
    keepalive_interval: int = s(75)
    keepalive_count: int = 9
    nodelay: bool = False
    window_scaling: bool = True
    timestamps: bool = True
    sack: bool = True
    ooo_limit: int = 256 * 1024         # bytes held out of order
    ooo_max_ranges: int = 64
    challenge_ack_limit: int = 10       # RFC 5961 §7: challenge ACKs per second per connection
    initial_cwnd: int = 10              # segments, RFC 6928
    max_time_wait: int = 16384          # TIME-WAIT entries kept (Linux tcp_max_tw_buckets)
    ephemeral_low: int = 32768          # RFC 6056 §2.1 range (Linux's default)
    ephemeral_high: int = 60999


def window_shift(buffer_size: int) -> int:
    """RFC 7323 §2.3: the smallest shift that lets the whole buffer be advertised."""
    shift = 0
    while (buffer_size >> shift) > 0xFFFF and shift < 14:
        shift += 1
    return shift


class TcpControlBlock:
    """RFC 9293 §3.3.1 variables of one connection, plus timers and buffers."""

    __slots__ = (
        "_challenge_count", "_challenge_start", "_closed_emitted", "_emit", "_out", "ack_now",
        "app_closed", "cc", "config", "delayed_ack_at", "embryonic", "error", "fin_queued", "fin_received",
        "fin_wait2_at", "gso_size", "irs", "iss", "keepalive", "keepalive_at", "keepalive_probes", "last_ack_sent", "last_send_at",
        "listener", "local", "lport", "max_snd_wnd", "mss_local", "nodelay", "on_established",
        "ooo", "ooo_fin", "passive", "probe_at", "probe_count", "progress", "pseudo_route", "pseudo_sum",
        "rcv_adv", "rcv_mss",
        "rcv_nxt", "rcv_wscale", "rcvbuf", "read_armed", "remote", "retries", "route", "route_fresh", "rport",
        "rto_at", "rtt", "rtt_seq", "rtt_time", "sack_ok", "sched_at", "snd_mss", "snd_nxt", "snd_una",
        "snd_wl1", "snd_wl2", "snd_wnd", "snd_wscale", "sndbuf", "soft_error", "state", "stats",
        "syn_retransmitted", "time_wait_at", "ts_offset", "ts_ok", "ts_recent", "ts_recent_at",
        "tso_max", "tso_route", "wake", "want_writable", "wscale_ok", "zone",
    )

    def __init__(self, *, local: bytes, lport: int, remote: bytes, rport: int, zone: int, iss: int,
                 mss_local: int, config: TcpConfig, stats: Stats, emit: Callable[[object], None],
                 ts_offset: int = 0, mem: TcpMemory | None = None) -> None:
        self.local, self.lport, self.remote, self.rport, self.zone = local, lport, remote, rport, zone
        self.config = config
        self.stats = stats
        self._emit = emit
        self.state = TcpState.CLOSED
        self.route: OutRoute | None = None       # owned by the layer (cached OutRoute)
        self.route_fresh = False                 # next send is the first after a lookup
        self.pseudo_route: OutRoute | None = None    # the route ``pseudo_sum`` was computed for
        self.pseudo_sum = 0                      # its pseudo-header address sum (wire.tcp.address_sum)
        self.sched_at: int | None = None         # the layer's timer-heap entry for this connection
        self.listener: object | None = None      # the TcpListener of a passive open
        self.on_established: Callable[[TcpControlBlock], None] | None = None
        self.wake: Callable[[TcpControlBlock, int | None], None] | None = None
        self.passive = False
        self.embryonic = False                   # passive and not yet ESTABLISHED: no owner yet
        mem = mem if mem is not None else TcpMemory()   # the layer's, for limits.tcp_mem
        self._init_send(iss, mss_local, mem)
        self._init_receive(mss_local, ts_offset, mem)
        self._init_timers_and_app()

    def _init_send(self, iss: int, mss_local: int, mem: TcpMemory) -> None:
        """RFC 9293 §3.3.1 send sequence variables, buffer, RTT and congestion state."""
        config = self.config
        self.iss = iss
        self.snd_una = iss
        self.snd_nxt = iss
        self.snd_wnd = 0
        self.snd_wl1 = 0
        self.snd_wl2 = iss
        self.max_snd_wnd = 0
        self.snd_wscale = 0
        self.mss_local = mss_local               # what we advertise in our SYN
        self.snd_mss = min(mss_local, DEFAULT_MSS6 if len(self.remote) == 16 else DEFAULT_MSS4)
        self.sndbuf = SendBuffer(iss + 1, config.snd_buf, mem)
        self.fin_queued = False                  # FIN follows the last queued byte
        self.cc = Congestion(self.snd_mss, iss + 1, sack=False, initial_segments=config.initial_cwnd)
        self.rtt = RttEstimator(config.rto_initial, config.rto_min, config.rto_max)
        self.rtt_seq: int | None = None          # Karn timing without timestamps
        self.rtt_time = 0
        self.retries = 0
        self.syn_retransmitted = False
        self.last_send_at = 0                    # when new data last left (RFC 5681 §4.1 idle test)
        self.tso_max = 0                         # TSO: payload bytes per segment the route's link splits (0: off)
        self.tso_route: OutRoute | None = None   # the route tso_max was asked for
        self.gso_size = 0                        # the MSS those large segments stand for

    def _init_receive(self, mss_local: int, ts_offset: int, mem: TcpMemory) -> None:
        """Receive sequence variables, buffers and negotiated options."""
        config = self.config
        self.irs = 0
        self.rcv_nxt = 0
        self.rcv_adv = 0                         # right edge of the window we advertised
        self.rcv_wscale = 0
        self.rcv_mss = min(mss_local, DEFAULT_MSS4)
        self.rcvbuf = ReceiveBuffer(config.rcv_buf, mem)
        self.ooo = ReassemblyQueue(config.ooo_limit, config.ooo_max_ranges, mem)
        self.ooo_fin: int | None = None
        self.fin_received = False
        self.last_ack_sent = 0
        self.ack_now = False
        # options
        self.ts_ok = False
        self.ts_offset = ts_offset
        self.ts_recent = 0
        self.ts_recent_at = 0
        self.sack_ok = False
        self.wscale_ok = False                   # both SYNs carried window scale

    def _init_timers_and_app(self) -> None:
        """Timers (RFC 6298 RTO, delayed ACK, persist, keepalive, TIME-WAIT, FIN-WAIT-2)
        and the application side."""
        config = self.config
        self.rto_at: int | None = None
        self.delayed_ack_at: int | None = None
        self.probe_at: int | None = None
        self.probe_count = 0
        self.keepalive = config.keepalive
        self.keepalive_at: int | None = None
        self.keepalive_probes = 0
        self.time_wait_at: int | None = None
        self.fin_wait2_at: int | None = None
        self.nodelay = config.nodelay
        self.app_closed = False
        self.want_writable = False
        self.read_armed = True                   # the next data or FIN emits Readable (recv re-arms)
        self.error: int | None = None
        self.soft_error: int | None = None
        self.progress = False                    # an ACK advanced SND.UNA (layer confirms reachability)
        self._closed_emitted = False
        self._challenge_start = 0
        self._challenge_count = 0
        self._out: list[TcpSegment] = []

    def __repr__(self) -> str:
        return f"<TcpConnection {self.state.value} lport={self.lport} rport={self.rport}>"

    # --- windows ----------------------------------------------------------

    def rcv_window(self) -> int:
        """How much beyond RCV.NXT is acceptable: what we advertised, or more if it fits;
        less only when the stack's TCP memory (``limits.tcp_mem``) is spent: then data
        inside the advertised window is refused (and counted), as Linux does under
        memory pressure; the sender retransmits it."""
        rcvbuf = self.rcvbuf
        wnd = max(self.rcv_adv - self.rcv_nxt, rcvbuf.limit - rcvbuf.size, 0)
        room = rcvbuf.mem.room(rcvbuf.size)
        return wnd if wnd <= room else room

    def _advertise(self, syn: bool) -> int:
        """The window field for the next segment; records the new right edge."""
        rcvbuf = self.rcvbuf
        free = max(0, rcvbuf.limit - rcvbuf.size)      # rcvbuf.space(), inlined (per segment)
        mem = rcvbuf.mem
        if free > mem.limit - mem.used:                # the stack's TCP memory has less room:
            free = min(free, mem.room(rcvbuf.size))    # the right edge grows by that at most
        current = max(self.rcv_adv - self.rcv_nxt, 0)
        # RFC 9293 §3.8.6.2.2: move the right edge only by min(buffer/2, MSS) or more.
        new = free if free - current >= min(rcvbuf.limit // 2, self.mss_local) else current
        if syn:
            # RFC 7323 §2.2: the window field of a SYN is never scaled.
            field = min(new, 0xFFFF)
            self.rcv_adv = self.rcv_nxt + field
            return field
        shift = self.rcv_wscale
        field = min(new >> shift, 0xFFFF)
        if (field << shift) < current:
            # RFC 7323 §2.4: never shrink the window; round the old edge up.
            field = min((current + (1 << shift) - 1) >> shift, 0xFFFF)
        self.rcv_adv = max(self.rcv_adv, self.rcv_nxt + (field << shift))
        return field

    def payload_mss(self) -> int:
        """Bytes of data per full segment: SND.MSS less the timestamp option (RFC 6691 §2;
        PROTOCOLS.md §7: Nagle's full-segment test uses this, not the bare MSS)."""
        return self.snd_mss - (TS_OPTION_LEN if self.ts_ok else 0)

    # --- forming segments -------------------------------------------------

    def _make(self, seq: int, flags: int, now: int, payload: bytes = b"") -> TcpSegment:
        """A non-SYN segment with ACK, window, timestamps and SACK blocks filled in."""
        ack = 0
        if flags & ACK:
            ack = self.rcv_nxt
            self.last_ack_sent = ack
            self.ack_now = False
            self.delayed_ack_at = None
        window = self._advertise(False)
        # ts_clock(now, ts_offset), inlined (per segment)
        ts = ((now // TS_TICK_NS + self.ts_offset) & TS_MASK, self.ts_recent) if self.ts_ok else None
        blocks: tuple[tuple[int, int], ...] = ()
        if self.sack_ok and self.ooo.starts and flags & ACK:
            blocks = self.ooo.sack_blocks(3 if ts is not None else 4)
        return _new(TcpSegment, (seq, ack, flags, window, payload, 0, None, None, False, blocks, ts))

    def _syn_segment(self, now: int) -> TcpSegment:
        """Our SYN (SYN-SENT) or SYN-ACK (SYN-RECEIVED) with the options we negotiate.

        RFC 7323 §1.3/§3.2 and RFC 2018 §2: a SYN-ACK carries window scale,
        timestamps and SACK-permitted only when the peer's SYN did.
        """
        cfg = self.config
        if self.state is TcpState.SYN_SENT:
            flags, ack = SYN, 0
            wscale = self.rcv_wscale if cfg.window_scaling else None
            ts = (ts_clock(now, self.ts_offset), 0) if cfg.timestamps else None
            sack = cfg.sack
        else:
            flags, ack = SYN | ACK, self.rcv_nxt
            wscale = self.rcv_wscale if self.wscale_ok else None
            ts = (ts_clock(now, self.ts_offset), self.ts_recent) if self.ts_ok else None
            sack = self.sack_ok
            self.last_ack_sent = ack
        window = self._advertise(True)
        return TcpSegment(self.iss, ack, flags, window, b"", 0, self.mss_local, wscale, sack, (), ts)

    def _rst(self, seq: int) -> TcpSegment:
        """<SEQ=seq><CTL=RST> (RFC 9293 §3.10.7.4 reset forms)."""
        return TcpSegment(seq, 0, 0x04, 0)

    # --- events -----------------------------------------------------------

    def _event(self, event: object) -> None:
        self._emit(event)

    def _wake(self, now: int | None) -> None:
        if self.wake is not None:
            self.wake(self, now)
