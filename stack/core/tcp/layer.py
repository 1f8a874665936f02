"""The TCP layer: demultiplexing, listeners, connect, resets, timers.

A ``TcpListener`` keeps a SYN queue and an accept queue, both bounded by the
backlog: a full SYN queue switches to SYN cookies (RFC 4987 §3.6) so that
legitimate clients keep getting through a SYN flood; a full accept queue
drops SYNs and handshake-completing ACKs (the peer retransmits, as with
Linux's default ``tcp_abort_on_overflow = 0``).

RFC 9293 §3.10.7.1 (segments for no connection get a RST), §3.10.7.2
(LISTEN), RFC 6056 §3.3.1 (ephemeral ports: Algorithm 1, random from the
injected rng), RFC 6528 (ISNs), RFC 4987 §3.6 (SYN cookies when the SYN queue
is full), RFC 6191 (a newer SYN may reuse a TIME-WAIT 4-tuple), RFC 5927
(ICMP errors must match a connection and a sequence number in flight), RFC
4861 §7.3.1 (forward progress confirms the neighbor: ``confirm_reachable``).

Connections are keyed by ``(local_addr, local_port, remote_addr, remote_port,
zone)``; the zone is the receive interface when either address is link-local
(RFC 4007 §6), else 0. Each connection caches its ``OutRoute`` and reuses it
while ``ip.route_valid(route)``: ``ip_send(cached=False)`` right after a
lookup, ``cached=True`` after that (what ``tapstack trace`` shows as
``route=lookup``/``route=cached``).

API calls on connections (``send``/``recv``/``close``...) made outside a core
call mark the connection; its output leaves at the next ``poll(now)``, and
``poll_at()`` returns an instant already past while any is pending.
"""

from __future__ import annotations

import errno
from collections import deque
from collections.abc import Callable
from heapq import heappop, heappush

from stack.core.events import Accepted
from stack.core.ipservice import IpService, OutRoute, RouteError
from stack.core.stats import Drop
from stack.core.tcp.buffers import TcpMemory
from stack.core.tcp.connection import TcpConnection
from stack.core.tcp.rtt import ts_clock
from stack.core.tcp.seq import (
    SEQ_MASK,
    check_cookie,
    cookie_options,
    cookie_tsval,
    isn_and_ts_offset,
    make_cookie,
)
from stack.core.tcp.tcb import (
    DEFAULT_MSS4,
    DEFAULT_MSS6,
    MIN_MSS,
    TcpConfig,
    TcpControlBlock,
    TcpState,
    window_shift,
)
from stack.wire.addr import fmt, needs_zone
from stack.wire.errors import ParseError
from stack.wire.frame_types import PROTO_TCP, Frame
from stack.wire.tcp import ACK, FIN, RST, SYN, TcpSegment, address_sum, build_tcp, parse_tcp

Key = tuple[bytes, int, bytes, int, int]       # (local, lport, remote, rport, zone)
ListenKey = tuple[bytes | None, int, int]      # (local or None = any, port, zone)


def _is_group(addr: bytes) -> bool:
    if len(addr) == 16:
        return addr[0] == 0xFF
    return 224 <= addr[0] <= 239 or addr == b"\xff\xff\xff\xff"


def _endpoint(addr: bytes | None, port: int, zone: int, namer: Callable[[bytes, int], str] | None) -> str:
    if addr is None:
        return f"*:{port}"
    if namer is not None:
        text = namer(addr, zone)
    else:
        text = fmt(addr) + (f"%{zone}" if zone and needs_zone(addr) else "")
    return f"[{text}]:{port}" if len(addr) == 16 else f"{text}:{port}"


def _proto(addr: bytes | None) -> str:
    return "tcp6" if addr is not None and len(addr) == 16 else "tcp"


class TcpListener:
    """LISTEN on ``(local or any, port, zone)``; ``accept()`` hands out connections."""

    __slots__ = ("_close_cb", "_emit", "accept_queue", "backlog", "local", "open", "port",
                 "syn_queue", "zone")

    def __init__(self, local: bytes | None, port: int, zone: int, backlog: int,
                 emit: Callable[[object], None], close_cb: Callable[[TcpListener, int | None], None]) -> None:
        self.local = local
        self.port = port
        self.zone = zone
        self.backlog = max(1, backlog)
        self.syn_queue: dict[Key, TcpConnection] = {}
        self.accept_queue: deque[TcpConnection] = deque()
        self.open = True
        self._emit = emit
        self._close_cb = close_cb

    def __repr__(self) -> str:
        return f"<TcpListener port={self.port} queued={len(self.accept_queue)}>"

    @property
    def state(self) -> TcpState:
        return TcpState.LISTEN if self.open else TcpState.CLOSED

    def accept(self) -> TcpConnection | None:
        """The oldest established connection not yet accepted, or None."""
        return self.accept_queue.popleft() if self.accept_queue else None

    def close(self, now: int | None = None) -> None:
        """Stop listening; connections not yet accepted are reset."""
        if self.open:
            self.open = False
            self._close_cb(self, now)

    def syn_queue_full(self) -> bool:
        return len(self.syn_queue) >= self.backlog

    def accept_queue_full(self) -> bool:
        return len(self.accept_queue) >= self.backlog

    def on_established(self, conn: TcpControlBlock) -> None:
        """A passive connection completed its handshake (called by the connection)."""
        assert isinstance(conn, TcpConnection)
        self.syn_queue.pop((conn.local, conn.lport, conn.remote, conn.rport, conn.zone), None)
        if self.open:
            self.accept_queue.append(conn)
            self._emit(Accepted(self))


class TcpLayer:
    """All TCP endpoints of one stack."""

    def __init__(self, ip: IpService, config: TcpConfig | None = None) -> None:
        self.ip = ip
        self.config = config or TcpConfig()
        self.stats = ip.stats
        self._tcp_counters = ip.stats.of("tcp")        # bumped per segment without a call
        self.connections: dict[Key, TcpConnection] = {}
        self.listeners: dict[ListenKey, TcpListener] = {}
        self._secret = ip.rng.randbytes(32)          # RFC 6528 §3 secret key
        self._dirty: dict[TcpConnection, None] = {}  # insertion-ordered: deterministic
        self._timers: list[tuple[int, int, TcpConnection]] = []   # (deadline, order, conn) heap
        self._timer_seq = 0
        self._time_wait: dict[TcpConnection, None] = {}
        self._now = 0
        self._tso_max = getattr(ip, "tso_max", None)   # optional in IpService: TSO routes
        self._route_cached = getattr(ip, "route_output_cached", None)   # optional too
        # Between begin_batch() and end_batch(): ESTABLISHED connections whose segments
        # were taken in order are sent for once, at the end (one ACK per run, as GRO).
        self._deferred: dict[TcpConnection, None] | None = None
        # What every connection's buffers hold together (limits.tcp_mem, set by the Stack)
        self.mem = TcpMemory()
        # Connections outside TIME-WAIT (those have max_time_wait) at most: limits.tcp_max_connections
        self.max_connections = 1 << 62

    # --- receive ----------------------------------------------------------

    def handle(self, frame: Frame, rcv_ifindex: int, now: int) -> None:
        """One TCP segment that IP accepted for us (not a fragment)."""
        self._now = now
        self._tcp_counters["in_segs"] += 1
        if not frame.csum_ok:
            self.stats.drop(Drop.BAD_CHECKSUM)
            return
        try:
            seg = parse_tcp(frame.buf, frame.l4_off, frame.ip_end)
        except ParseError as e:
            self.stats.drop(f"parse_{e.reason}")
            return
        src, dst = frame.src, frame.dst
        sport, dport = frame.sport, frame.dport
        if len(dst) == 16:
            # the tests of _is_group and needs_zone, inlined (per segment)
            d0, s0 = dst[0], src[0]
            if d0 == 0xFF or s0 == 0xFF or sport == 0 or dport == 0:
                self.stats.drop(Drop.TCP_BAD_SEGMENT)   # RFC 9293 §3.9.1.3 note: unicast only
                return
            zone = rcv_ifindex if ((d0 == 0xFE and dst[1] & 0xC0 == 0x80)
                                   or (s0 == 0xFE and src[1] & 0xC0 == 0x80)) else 0
        else:
            if _is_group(dst) or _is_group(src) or sport == 0 or dport == 0:
                self.stats.drop(Drop.TCP_BAD_SEGMENT)
                return
            zone = 0
        key = (dst, dport, src, sport, zone)
        conn = self.connections.get(key)
        if conn is not None:
            if not seg.flags & SYN or not conn.accepts_new_syn(seg):
                self._deliver(conn, seg, now)
                return
            self._forget(conn)                          # RFC 6191: a new incarnation
            self.stats.count("tcp", "time_wait_reused")
        listener = self._find_listener(dst, frame.dport, zone)
        if listener is not None:
            self._on_listen(listener, key, seg, now)
            return
        self.stats.drop(Drop.TCP_NO_PORT)
        self._reset_for(key, seg, now)

    def _deliver(self, conn: TcpConnection, seg: TcpSegment, now: int) -> None:
        listener = conn.listener
        if (conn.state is TcpState.SYN_RECEIVED and isinstance(listener, TcpListener)
                and seg.flags & ACK and not seg.flags & RST and listener.accept_queue_full()):
            self.stats.drop(Drop.TCP_BACKLOG_FULL)     # keep SYN-RECEIVED; the SYN,ACK is resent
            return
        conn.on_segment(seg, now)
        if conn.progress:
            conn.progress = False
            if conn.route is not None:
                self.ip.confirm_reachable(conn.route, now)
        state = conn.state
        if state is TcpState.CLOSE_WAIT and seg.flags & FIN and not conn.embryonic and not conn.app_closed \
                and not conn.has_segments():
            # The peer's FIN: its ACK waits for the layer's next poll (an instant already
            # due), so that an application closing on the EOF it was just told about sends
            # one FIN,ACK instead of an ACK and then a FIN (one segment fewer per connection).
            self._dirty[conn] = None
            if self._deferred:
                self._deferred.pop(conn, None)
            return
        deferred = self._deferred
        if deferred is not None and state is TcpState.ESTABLISHED and not conn.ooo.starts:
            deferred[conn] = None           # out of order data still ACKs at once (RFC 5681 §4.2)
            return
        self._flush(conn, now)

    def begin_batch(self) -> None:
        """Frames read together from a link follow: defer in-order ESTABLISHED output."""
        if self._deferred is None:
            self._deferred = {}

    def end_batch(self, now: int) -> None:
        """Send for every connection deferred since ``begin_batch``, in arrival order."""
        deferred, self._deferred = self._deferred, None
        if deferred:
            for conn in deferred:
                self._flush(conn, now)

    def _find_listener(self, dst: bytes, port: int, zone: int) -> TcpListener | None:
        listeners = self.listeners
        for key in ((dst, port, zone), (dst, port, 0), (None, port, zone), (None, port, 0)):
            found = listeners.get(key)
            if found is not None:
                return found
        return None

    def _reset_for(self, key: Key, seg: TcpSegment, now: int) -> None:
        """RFC 9293 §3.10.7.1: a RST for a segment that belongs to no connection."""
        if seg.flags & RST:
            return
        if seg.flags & ACK:
            rst = TcpSegment(seg.ack, 0, RST, 0)                       # <SEQ=SEG.ACK><CTL=RST>
        else:
            rst = TcpSegment(0, (seg.seq + seg.seg_len) & SEQ_MASK, RST | ACK, 0)
        self.stats.count("tcp", "out_rsts")
        self._send_raw(key, rst, now)

    # --- LISTEN (RFC 9293 §3.10.7.2) --------------------------------------

    def _on_listen(self, listener: TcpListener, key: Key, seg: TcpSegment, now: int) -> None:
        flags = seg.flags
        if flags & RST:
            self.stats.drop(Drop.TCP_LISTEN_RST)                      # first: ignore RST
            return
        if flags & ACK:
            if not flags & SYN and self._cookie_ack(listener, key, seg, now):
                return
            self.stats.drop(Drop.TCP_LISTEN_ACK)
            self._reset_for(key, seg, now)                            # second: any ACK is bad
            return
        if not flags & SYN:
            self.stats.drop(Drop.TCP_LISTEN_NO_SYN)
            return
        if listener.accept_queue_full():
            self.stats.drop(Drop.TCP_BACKLOG_FULL)
            return
        if self._at_connection_limit():
            self.stats.drop(Drop.TCP_CONN_LIMIT)        # as a full backlog: the peer retries
            return
        if listener.syn_queue_full():
            self._send_cookie(key, seg, now)
            return
        found = self._route_for(key, now)
        if found is None:
            return
        route, hit = found
        iss, ts_offset = isn_and_ts_offset(self._secret, key[0], key[1], key[2], key[3], now)
        conn = self._new_connection(key, iss, route, ts_offset)
        conn.route_fresh = not hit
        conn.listener = listener
        conn.on_established = listener.on_established
        listener.syn_queue[key] = conn
        self.connections[key] = conn
        conn.open_passive(seg, now)
        self._flush(conn, now)

    def _send_cookie(self, key: Key, seg: TcpSegment, now: int) -> None:
        """RFC 4987 §3.6: answer without state; the SYN,ACK's ISN is the cookie."""
        found = self._route_for(key, now)
        if found is None:
            return
        route, hit = found
        local, lport, remote, rport, _zone = key
        cfg = self.config
        peer_mss = seg.mss or (DEFAULT_MSS6 if len(remote) == 16 else DEFAULT_MSS4)
        cookie, _mss = make_cookie(self._secret, local, lport, remote, rport, seg.seq, peer_mss, now)
        ts: tuple[int, int] | None = None
        wscale: int | None = None
        sack = False
        if seg.ts is not None and cfg.timestamps:
            # Options survive only inside the timestamp (as in Linux); without one they are lost.
            peer_ws = seg.wscale if cfg.window_scaling else None
            sack = seg.sack_permitted and cfg.sack
            ts = (cookie_tsval(ts_clock(now, self._ts_offset(key)), peer_ws, sack), seg.ts[0])
            wscale = window_shift(cfg.rcv_buf) if peer_ws is not None else None
        synack = TcpSegment(cookie, (seg.seq + 1) & SEQ_MASK, SYN | ACK, min(cfg.rcv_buf, 0xFFFF), b"", 0,
                            self._mss_for(route), wscale, sack, (), ts)
        self.stats.count("tcp", "syncookies_sent")
        self._send_on(route, key, synack, now, cached=hit)

    def _cookie_ack(self, listener: TcpListener, key: Key, seg: TcpSegment, now: int) -> bool:
        local, lport, remote, rport, _zone = key
        peer_isn, cookie = (seg.seq - 1) & SEQ_MASK, (seg.ack - 1) & SEQ_MASK
        mss = check_cookie(self._secret, local, lport, remote, rport, peer_isn, cookie, now)
        if mss is None:
            return False
        if listener.accept_queue_full():
            self.stats.drop(Drop.TCP_BACKLOG_FULL)
            return True
        if self._at_connection_limit():
            self.stats.drop(Drop.TCP_CONN_LIMIT)
            return True
        found = self._route_for(key, now)
        if found is None:
            return True
        route, hit = found
        wscale, sack = (None, False)
        if seg.ts is not None and self.config.timestamps:
            wscale, sack = cookie_options(seg.ts[1])
        conn = self._new_connection(key, cookie, route)
        conn.route_fresh = not hit
        conn.listener = listener
        conn.on_established = listener.on_established
        self.connections[key] = conn
        self.stats.count("tcp", "syncookies_recv")
        conn.open_from_cookie(seg, mss, wscale, sack, now)
        self._flush(conn, now)
        return True

    # --- the socket calls -------------------------------------------------

    def listen(self, addr: bytes | None, port: int, backlog: int = 128, zone: int = 0) -> TcpListener:
        """LISTEN on addr (None = every address, both families) and port (0 = pick one)."""
        if addr is not None and not self.ip.is_local_address(addr, zone):
            raise OSError(errno.EADDRNOTAVAIL, "not a local address")
        if not (addr is not None and needs_zone(addr)) and addr is not None:
            zone = 0
        if port == 0:
            port = self._free_port(lambda p: (addr, p, zone) not in self.listeners)
        key: ListenKey = (addr, port, zone)
        if key in self.listeners:
            raise OSError(errno.EADDRINUSE, "address in use")
        listener = TcpListener(addr, port, zone, backlog, self.ip.emit, self._unlisten)
        self.listeners[key] = listener
        return listener

    def _unlisten(self, listener: TcpListener, now: int | None) -> None:
        self.listeners.pop((listener.local, listener.port, listener.zone), None)
        for conn in [*listener.syn_queue.values(), *listener.accept_queue]:
            conn.abort(now)
        listener.syn_queue.clear()
        listener.accept_queue.clear()

    def connect(self, dst: bytes, port: int, zone: int = 0, src: bytes | None = None, now: int = 0, *,
                sport: int | None = None) -> TcpConnection:
        """Active open. Raises RouteError (errno ENETUNREACH/EHOSTUNREACH...) when there
        is no route, OSError(EADDRINUSE/EADDRNOTAVAIL) when no port is free,
        OSError(ENOBUFS) at ``limits.tcp_max_connections``."""
        if self._at_connection_limit():
            raise OSError(errno.ENOBUFS, f"TCP connection limit reached ({self.max_connections}, "
                          "limits.tcp_max_connections)")
        route = self.ip.route_output(dst, zone, src, now)
        local = route.src
        if needs_zone(dst):
            key_zone = route.zone
        elif needs_zone(local):
            key_zone = route.src_zone
        else:
            key_zone = 0
        if sport is None:
            sport = self._free_port(lambda p: (local, p, dst, port, key_zone) not in self.connections
                                    and not self._port_listened(p))
        elif (local, sport, dst, port, key_zone) in self.connections:
            raise OSError(errno.EADDRINUSE, "4-tuple in use")
        key = (local, sport, dst, port, key_zone)
        iss, ts_offset = isn_and_ts_offset(self._secret, local, sport, dst, port, now)
        conn = self._new_connection(key, iss, route, ts_offset)
        self.connections[key] = conn
        conn.open_active(now)
        self._flush(conn, now)
        return conn

    def _at_connection_limit(self) -> bool:
        return len(self.connections) - len(self._time_wait) >= self.max_connections

    def _free_port(self, free: Callable[[int], bool]) -> int:
        """RFC 6056 §3.3.1 Algorithm 1: a random start, then the next free port."""
        low, high = self.config.ephemeral_low, self.config.ephemeral_high
        count = high - low + 1
        start = self.ip.rng.randrange(count)
        for i in range(count):
            port = low + (start + i) % count
            if free(port):
                return port
        raise OSError(errno.EADDRNOTAVAIL, "no free local port")

    def _port_listened(self, port: int) -> bool:
        return any(k[1] == port for k in self.listeners)

    def on_icmp_error(self, local: bytes, lport: int, remote: bytes, rport: int, zone: int, seq: int,
                      err: int, now: int, mtu: int = 0) -> None:
        """An ICMP(v6) error quoting one of our segments (from IP). ``err`` is the errno
        the error maps to (ECONNREFUSED, EHOSTUNREACH, ...; EMSGSIZE with ``mtu`` for
        Packet Too Big / Fragmentation Needed); ``seq`` the quoted sequence number."""
        if not (needs_zone(local) or needs_zone(remote)):
            zone = 0
        conn = self.connections.get((local, lport, remote, rport, zone))
        if conn is None:
            self.stats.drop(Drop.ICMP_ERROR_NO_MATCH)
            return
        conn.on_icmp_error(err, seq, mtu, now)
        self._flush(conn, now)

    # --- timers -----------------------------------------------------------

    def poll(self, now: int) -> None:
        """Send what API calls queued and run due timers."""
        self._now = now
        for conn in list(self._dirty):
            self._flush(conn, now)
        timers = self._timers
        while timers and timers[0][0] <= now:
            due, _n, conn = heappop(timers)
            if conn.sched_at != due or conn.state is TcpState.CLOSED:
                continue                                # stale: a newer entry exists, or gone
            conn.sched_at = None
            actual = conn.poll_at()
            if actual is not None and actual <= now:
                conn.poll(now)
                self._flush(conn, now)                  # re-schedules
            else:
                self._schedule(conn)

    def poll_at(self) -> int | None:
        """The earliest deadline (an instant already past while API output is pending)."""
        if self._dirty:
            return self._now
        timers = self._timers
        while timers and (timers[0][2].sched_at != timers[0][0] or timers[0][2].state is TcpState.CLOSED):
            heappop(timers)                             # drop stale heads
        return timers[0][0] if timers else None

    def _schedule(self, conn: TcpConnection) -> None:
        """Keep a heap entry at or before the connection's earliest deadline. An entry is
        pushed only when the deadline moves earlier; a later one is found when the
        earlier entry pops (lazy invalidation, so restarting the RTO costs nothing)."""
        due = conn.poll_at()
        if due is not None and (conn.sched_at is None or due < conn.sched_at):
            conn.sched_at = due
            self._timer_seq += 1
            heappush(self._timers, (due, self._timer_seq, conn))

    def sockets(self) -> list[dict[str, object]]:
        """Rows for ``tapstack sockets`` (INTERFACE.md: proto, state, local, remote,
        recv_q, send_q; as ``ss``: a listener's Recv-Q is its accept queue, Send-Q its
        backlog). Link-local addresses carry ``%ifname`` when IP can name the zone."""
        namer = getattr(self.ip, "fmt_zoned", None)
        rows: list[dict[str, object]] = []
        for lst in self.listeners.values():
            rows.append({"proto": _proto(lst.local), "state": "LISTEN",
                         "local": _endpoint(lst.local, lst.port, lst.zone, namer), "remote": "*:*",
                         "recv_q": len(lst.accept_queue), "send_q": lst.backlog})
        for c in self.connections.values():
            rows.append({"proto": _proto(c.local), "state": c.state.value,
                         "local": _endpoint(c.local, c.lport, c.zone, namer),
                         "remote": _endpoint(c.remote, c.rport, c.zone, namer),
                         "recv_q": c.recv_queue, "send_q": c.send_queue})
        return rows

    # --- output -----------------------------------------------------------

    def _new_connection(self, key: Key, iss: int, route: OutRoute, ts_offset: int | None = None) -> TcpConnection:
        local, lport, remote, rport, zone = key
        conn = TcpConnection(local=local, lport=lport, remote=remote, rport=rport, zone=zone, iss=iss,
                             mss_local=self._mss_for(route), config=self.config, stats=self.stats,
                             emit=self.ip.emit,
                             ts_offset=self._ts_offset(key) if ts_offset is None else ts_offset,
                             mem=self.mem)
        conn.route = route
        conn.route_fresh = True
        conn.wake = self._wake
        return conn

    def _wake(self, conn: TcpControlBlock, now: int | None) -> None:
        assert isinstance(conn, TcpConnection)
        if now is None:
            self._dirty[conn] = None
        else:
            self._now = max(self._now, now)
            self._flush(conn, now)

    def _flush(self, conn: TcpConnection, now: int) -> None:
        self._dirty.pop(conn, None)
        if self._deferred:
            self._deferred.pop(conn, None)
        route = conn.route
        if self._tso_max is not None and route is not None and conn.tso_route is not route:
            # payload room in one TSO packet: the IP maximum less IP and TCP headers (options
            # included); asked once per route the connection uses
            conn.tso_route = route
            tso = self._tso_max(route)
            conn.tso_max = tso - (40 if len(route.dst) == 16 else 20) - 60 if tso else 0
        for seg in conn.dispatch(now):
            self._transmit(conn, seg, now)
        if conn.state is TcpState.TIME_WAIT and conn not in self._time_wait:
            if len(self._time_wait) >= self.config.max_time_wait:
                self.stats.drop(Drop.TCP_TIME_WAIT_OVERFLOW)   # as Linux: skip TIME-WAIT
                conn.leave_time_wait(now)
            else:
                self._time_wait[conn] = None
        if conn.state is TcpState.CLOSED:
            self._forget(conn)
        else:
            self._schedule(conn)

    def _forget(self, conn: TcpConnection) -> None:
        key = (conn.local, conn.lport, conn.remote, conn.rport, conn.zone)
        if self.connections.get(key) is conn:
            del self.connections[key]
        # Nothing will be sent; unread data may still be read, off the stack's TCP memory
        if conn.sndbuf.size:
            conn.sndbuf.clear()
        if conn.ooo.size:
            conn.ooo.clear()
        if conn.rcvbuf.size:
            conn.rcvbuf.detach()
        self._dirty.pop(conn, None)
        if self._deferred:
            self._deferred.pop(conn, None)
        self._time_wait.pop(conn, None)
        if isinstance(conn.listener, TcpListener):
            conn.listener.syn_queue.pop(key, None)

    def _transmit(self, conn: TcpConnection, seg: TcpSegment, now: int) -> None:
        route = conn.route
        cached = not conn.route_fresh
        if route is None or not self.ip.route_valid(route):
            try:
                route = self.ip.route_output(conn.remote, conn.zone, conn.local, now)
            except RouteError as e:
                conn.soft_error = e.errno
                self.stats.drop(Drop.NO_ROUTE)
                return
            conn.route = route
            cached = False
            if self._mss_for(route) < conn.snd_mss:
                conn.on_path_mtu(route.mtu)
        conn.route_fresh = False
        self._tcp_counters["out_segs"] += 1
        if conn.pseudo_route is not route:
            conn.pseudo_route = route
            conn.pseudo_sum = address_sum(route.src, route.dst)
        if len(seg.payload) > conn.gso_size and conn.tso_max:
            # a TSO segment: header and payload travel unjoined down to the link (GsoChain)
            l4 = build_tcp(route.src, route.dst, conn.lport, conn.rport, seg, conn.pseudo_sum, True)
            self.ip.ip_send(route, PROTO_TCP, l4, now, cached=cached, gso=conn.gso_size)
            return
        l4 = build_tcp(route.src, route.dst, conn.lport, conn.rport, seg, conn.pseudo_sum)
        self.ip.ip_send(route, PROTO_TCP, l4, now, cached=cached)

    def _route_for(self, key: Key, now: int) -> tuple[OutRoute, bool] | None:
        """The route toward a SYN's (or a segment without a connection's) sender: the
        stack's cached decision when IP keeps one (``route_output_cached``: valid within
        its routing generation, never for a destination with a learned path MTU), as
        echo replies do; a flood of short connections from one peer looks it up once.
        (route, True when it came from that cache) or None (no route, counted)."""
        try:
            cached = self._route_cached
            if cached is not None:
                route, hit = cached(key[2], key[4], key[0], now)
                return route, hit
            return self.ip.route_output(key[2], key[4], key[0], now), False
        except RouteError:
            self.stats.drop(Drop.NO_ROUTE)
            return None

    def _send_raw(self, key: Key, seg: TcpSegment, now: int) -> None:
        found = self._route_for(key, now)
        if found is not None:
            self._send_on(found[0], key, seg, now, cached=found[1])

    def _send_on(self, route: OutRoute, key: Key, seg: TcpSegment, now: int, *, cached: bool) -> None:
        self.stats.count("tcp", "out_segs")
        self.ip.ip_send(route, PROTO_TCP, build_tcp(route.src, route.dst, key[1], key[3], seg), now,
                        cached=cached)

    def _mss_for(self, route: OutRoute) -> int:
        """RFC 9293 §3.7.1: MTU less the IP and TCP headers."""
        return max(MIN_MSS, route.mtu - (40 if len(route.dst) == 16 else 20) - 20)

    def _ts_offset(self, key: Key) -> int:
        """RFC 7323 §5.4: a per-connection timestamp offset from a keyed hash (the one
        the connection's ISN comes from: seq.isn_and_ts_offset)."""
        return isn_and_ts_offset(self._secret, key[0], key[1], key[2], key[3], 0)[1]
