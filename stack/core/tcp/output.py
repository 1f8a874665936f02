"""What a connection sends, and when: output and timers.

RFC 9293 §3.8.6 (sending with the peer's window; §3.8.6.1 zero-window probes;
§3.8.6.2.1 sender silly window avoidance), §3.7.4 (Nagle), RFC 6298 §5 (the
retransmission timer), RFC 5681/6675 via ``congestion.py`` (what to resend,
how much may be in flight), RFC 1122 4.2.3.6 (keep-alives), RFC 9293 §3.10.8
(timeouts: user timeout, TIME-WAIT), RFC 7323 §3.2 (timestamps on every
segment).

``dispatch(now)`` returns the segments to send now; ``poll_at()``/``poll(now)``
run the timers. Nothing here reads a clock or calls out: segments are
returned, events go to the emit function given at construction.
"""

from __future__ import annotations

import errno

from stack.core.events import Closed, Connected, SocketError
from stack.core.tcp.congestion import Recovery
from stack.core.tcp.tcb import SENDING, TcpControlBlock, TcpState
from stack.wire.tcp import ACK, FIN, PSH, TcpSegment

_NO_ACK_STATES = frozenset({TcpState.CLOSED, TcpState.LISTEN, TcpState.SYN_SENT})
_KEEPALIVE_STATES = frozenset({TcpState.ESTABLISHED, TcpState.CLOSE_WAIT, TcpState.FIN_WAIT_2})


class TcpOutput(TcpControlBlock):
    """Sending and timers; the arrival side is ``TcpConnection``."""

    __slots__ = ()

    # --- output -----------------------------------------------------------

    def dispatch(self, now: int) -> list[TcpSegment]:
        """Segments to transmit now, in order (control segments first)."""
        out = self._out
        self._out = []
        if self.app_closed and self.state is TcpState.FIN_WAIT_2 and self.fin_wait2_at is None:
            self.fin_wait2_at = now + self.config.fin_wait2_timeout     # close() without a time
        if self.keepalive and self.keepalive_at is None and self.state in _KEEPALIVE_STATES:
            self._arm_keepalive(now)                                    # set_keepalive() without a time
        if self.state in SENDING:
            self._send_data(now, out)
        if self.ack_now and self.state not in _NO_ACK_STATES:
            out.append(self._make(self.snd_nxt, ACK, now))
        return out

    def has_output(self) -> bool:
        return bool(self._out) or self.ack_now

    def has_segments(self) -> bool:
        """Control segments are queued (a RST, a SYN,ACK again): not only an ACK."""
        return bool(self._out)

    def _sack_option_len(self) -> int:
        if not (self.sack_ok and self.ooo.starts):
            return 0
        return 4 + 8 * min(len(self.ooo), 3 if self.ts_ok else 4)

    def _send_data(self, now: int, out: list[TcpSegment]) -> None:
        cc = self.cc
        if (cc.state is Recovery.OPEN and not self.fin_queued and self.sndbuf.end == self.snd_nxt
                and self.gso_size):
            # Nothing new and nothing to resend (every ACK of a receiver, most of a
            # request/answer exchange): what the loop below would conclude, without it.
            self.probe_at = None
            return
        mss = self.payload_mss() - self._sack_option_len()
        self.gso_size = mss
        while True:
            una, nxt = self.snd_una, self.snd_nxt
            hole = cc.next_retransmit(una, nxt, mss)
            if hole is not None:
                start, end = hole
                # RFC 6675 §5 (C.1): retransmit while cwnd - pipe allows one segment.
                if not cc.force_retransmit and cc.pipe(una, nxt) + (end - start) > cc.cwnd:
                    return
                out.append(self._range_segment(start, end, now))
                cc.retransmitted(end, nxt)
                self.stats.count("tcp", "retrans_segs")
                self.rtt_seq = None                      # Karn: no sample from a resent range
                self._arm_rto(now)
                continue
            seg = self._next_new_segment(mss, now)
            if seg is not None:
                out.append(seg)
            elif not cc.rescue(una, nxt):
                break
        self._arm_persist(now)

    def _next_new_segment(self, mss: int, now: int) -> TcpSegment | None:
        data_end = self.sndbuf.end
        nxt = self.snd_nxt
        unsent = data_end - nxt
        fin_pending = self.fin_queued and nxt <= data_end
        if unsent <= 0 and not fin_pending:
            return None
        if nxt == self.snd_una and now - self.last_send_at > self.rtt.rto:
            self.cc.after_idle()                         # RFC 5681 §4.1: restart window
        usable_wnd = self.snd_una + self.snd_wnd - nxt
        n = min(max(unsent, 0), mss)
        if unsent > mss and self.tso_max > mss:
            # TSO: one segment of whole MSS multiples, as much as cwnd and the peer's
            # window allow; the link cuts it into MSS-sized segments (gso_size).
            room = min(self.tso_max, self.cc.cwnd - self.cc.pipe(self.snd_una, nxt), usable_wnd)
            room -= room % mss
            if room > mss:
                n = min(unsent, room)
        if n > 0:
            if n > self.cc.cwnd - self.cc.pipe(self.snd_una, nxt):
                return None                              # cwnd-limited: the ACK clock resumes it
            if n > usable_wnd:
                # RFC 9293 §3.8.6.2.1: send a partial segment only if it is at least
                # half the largest window the peer has offered.
                if usable_wnd <= 0 or usable_wnd < self.max_snd_wnd // 2:
                    return None
                n = usable_wnd
        # The FIN rides on the last byte, when the window has room for it.
        with_fin = fin_pending and nxt + n == data_end and usable_wnd > n
        if n == 0 and not with_fin:
            return None
        if n < mss and not with_fin and not self.nodelay and nxt > self.snd_una:
            # RFC 9293 §3.7.4 (Nagle): hold a partial segment while data is unacknowledged.
            return None
        end = nxt + n + (1 if with_fin else 0)
        seg = self._range_segment(nxt, end, now)
        self.snd_nxt = end
        self.last_send_at = now
        if self.rtt_seq is None and not self.ts_ok:
            self.rtt_seq, self.rtt_time = end, now       # RFC 6298 §3: time one segment per RTT
        self._arm_rto(now)
        return seg

    def _range_segment(self, start: int, end: int, now: int) -> TcpSegment:
        """The segment for sequence range [start, end): data from the send buffer,
        FIN when the range covers the FIN's sequence number."""
        data_end = self.sndbuf.end
        pay_end = min(end, data_end)
        payload = self.sndbuf.read(start, pay_end - start) if pay_end > start else b""
        flags = ACK
        if self.fin_queued and end > data_end:
            flags |= FIN
        if payload and pay_end == data_end:
            flags |= PSH
        return self._make(start, flags, now, payload)

    def _arm_rto(self, now: int) -> None:
        # RFC 6298 (5.1): start the timer when a segment with data or SYN/FIN goes out.
        if self.rto_at is None:
            self.rto_at = now + self.rtt.rto

    def _arm_persist(self, now: int) -> None:
        pending = self.sndbuf.end > self.snd_nxt or (self.fin_queued and self.snd_nxt <= self.sndbuf.end)
        if not pending or self.snd_nxt > self.snd_una:
            self.probe_at = None                         # RTO or ACKs drive progress
        elif self.probe_at is None:
            # RFC 9293 §3.8.6.1: nothing in flight and the window keeps us from sending.
            self.probe_at = now + self.rtt.rto

    # --- timers -----------------------------------------------------------

    def poll_at(self) -> int | None:
        """The earliest deadline of this connection, or None."""
        best = self.rto_at                  # unrolled: runs after every segment
        t = self.delayed_ack_at
        if t is not None and (best is None or t < best):
            best = t
        t = self.probe_at
        if t is not None and (best is None or t < best):
            best = t
        t = self.keepalive_at
        if t is not None and (best is None or t < best):
            best = t
        t = self.time_wait_at
        if t is not None and (best is None or t < best):
            best = t
        t = self.fin_wait2_at
        if t is not None and (best is None or t < best):
            best = t
        return best

    def poll(self, now: int) -> None:
        """Run every timer that is due at ``now``."""
        if self.time_wait_at is not None and now >= self.time_wait_at:
            self._enter(TcpState.CLOSED, now)            # RFC 9293 §3.10.8 time-wait timeout
            return
        if self.fin_wait2_at is not None and now >= self.fin_wait2_at:
            self._enter(TcpState.CLOSED, now)
            return
        if self.delayed_ack_at is not None and now >= self.delayed_ack_at:
            self.delayed_ack_at = None
            self.ack_now = True
        if self.rto_at is not None and now >= self.rto_at:
            self._on_rto(now)
        if self.probe_at is not None and now >= self.probe_at:
            self._on_persist(now)
        if self.keepalive_at is not None and now >= self.keepalive_at:
            self._on_keepalive(now)

    def _on_rto(self, now: int) -> None:
        self.rto_at = None
        if self.state is TcpState.SYN_SENT or self.state is TcpState.SYN_RECEIVED:
            self._on_syn_rto(now)
            return
        if self.snd_nxt == self.snd_una or self.state not in SENDING:
            return
        if self.retries >= self.config.max_retries:
            # RFC 9293 §3.8.3 / RFC 1122 4.2.3.5: R2 exceeded, give up.
            self._fail(self.soft_error or errno.ETIMEDOUT, now)
            return
        self.retries += 1
        self.rtt.on_timeout()                            # RFC 6298 (5.5)
        self.cc.on_timeout(self.snd_una, self.snd_nxt, repeated=self.retries > 1)
        self.rtt_seq = None
        self.stats.count("tcp", "timeouts")
        self.rto_at = now + self.rtt.rto                 # RFC 6298 (5.6)

    def _on_syn_rto(self, now: int) -> None:
        limit = self.config.syn_retries if self.state is TcpState.SYN_SENT else self.config.synack_retries
        if self.retries >= limit:
            self._fail(self.soft_error or errno.ETIMEDOUT, now)
            return
        self.retries += 1
        self.rtt.on_timeout()
        self.syn_retransmitted = True
        self._out.append(self._syn_segment(now))
        self.stats.count("tcp", "retrans_segs")
        self.rto_at = now + self.rtt.rto

    def _on_persist(self, now: int) -> None:
        self.probe_at = None
        if self.state not in SENDING or self.snd_nxt > self.snd_una:
            return
        unsent = self.sndbuf.end - self.snd_nxt
        usable = self.snd_una + self.snd_wnd - self.snd_nxt
        if usable > 0 and unsent > 0:
            # RFC 1122 4.2.3.4: the override timeout sends what the small window allows.
            end = self.snd_nxt + min(usable, unsent, self.payload_mss())
            self._out.append(self._range_segment(self.snd_nxt, end, now))
            self.snd_nxt = end
            self._arm_rto(now)
            return
        if self.probe_count >= self.config.max_retries:
            self._fail(errno.ETIMEDOUT, now)
            return
        # RFC 9293 §3.8.6.1: probe the closed window. Like Linux, with an old
        # sequence number: the receiver must answer with an ACK showing its window.
        self._out.append(self._make(self.snd_una - 1, ACK, now))
        self.probe_count += 1
        self.stats.count("tcp", "window_probes")
        self.probe_at = now + min(self.rtt.rto << self.probe_count, self.config.rto_max)

    def _arm_keepalive(self, now: int) -> None:
        if self.keepalive and self.state in _KEEPALIVE_STATES:
            self.keepalive_at = now + self.config.keepalive_idle
            self.keepalive_probes = 0

    def _on_keepalive(self, now: int) -> None:
        self.keepalive_at = None
        if not self.keepalive or self.state not in _KEEPALIVE_STATES:
            return
        if self.snd_nxt > self.snd_una or self.sndbuf.end > self.snd_nxt:
            self.keepalive_at = now + self.config.keepalive_idle    # data moves: RTO watches it
            return
        if self.keepalive_probes >= self.config.keepalive_count:
            self._fail(errno.ETIMEDOUT, now)                         # RFC 1122 4.2.3.6
            return
        # RFC 1122 4.2.3.6: SEG.SEQ = SND.NXT - 1, no data; the peer answers with an ACK.
        self._out.append(self._make(self.snd_una - 1, ACK, now))
        self.keepalive_probes += 1
        self.stats.count("tcp", "keepalive_probes")
        self.keepalive_at = now + self.config.keepalive_interval

    # --- state changes ----------------------------------------------------

    def _enter(self, state: TcpState, now: int) -> None:
        """Change state and set that state's timers (RFC 9293 §3.3.2 diagram)."""
        old = self.state
        self.state = state
        if state is TcpState.ESTABLISHED:
            self.embryonic = False
            self._arm_keepalive(now)
            if old is TcpState.SYN_SENT or (old is TcpState.SYN_RECEIVED and not self.passive):
                self._event(Connected(self))
            if self.passive and self.on_established is not None:
                self.on_established(self)
        elif state is TcpState.FIN_WAIT_2:
            if self.app_closed:
                self.fin_wait2_at = now + self.config.fin_wait2_timeout
        elif state is TcpState.TIME_WAIT:
            self._stop_timers()
            self.time_wait_at = now + 2 * self.config.msl            # RFC 9293 §3.4.2
            self._closed_event()
        elif state is TcpState.CLOSED:
            self._stop_timers()
            self.ack_now = False
            self.ooo.clear()
            self._closed_event()
        if state not in _KEEPALIVE_STATES:
            self.keepalive_at = None

    def _stop_timers(self) -> None:
        self.rto_at = self.delayed_ack_at = self.probe_at = self.keepalive_at = None
        self.time_wait_at = self.fin_wait2_at = None

    def _closed_event(self) -> None:
        # A passive connection still in the SYN queue has no owner to tell.
        if not self._closed_emitted and not self.embryonic:
            self._closed_emitted = True
            self._event(Closed(self))

    def _fail(self, err: int, now: int) -> None:
        """The connection dies with ``err`` (reported once, then Closed)."""
        self.error = err
        if not self.embryonic:
            self._event(SocketError(self, err))
        self._enter(TcpState.CLOSED, now)
