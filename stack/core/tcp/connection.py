"""One TCP connection, sans-I/O: segment arrival and the byte-stream API.

RFC 9293 §3.10 (event processing), written as the segment-arrival steps of
§3.10.7.4: ``_check_sequence``, ``_check_rst``, ``_check_syn``, ``_check_ack``,
``_process_text``, ``_check_fin`` (the urgent step is not implemented: urgent
data is delivered in line, RFC 6093 §5). SYN-SENT has its own path
(§3.10.7.3). Protections: RFC 5961 (RST and SYN in window → challenge ACK,
rate-limited; ACK outside [SND.UNA - MAX.SND.WND, SND.NXT] → challenge ACK),
RFC 7323 §5 (PAWS), RFC 1337 (RST ignored in TIME-WAIT), RFC 5927 (ICMP
errors must quote a sequence number in flight).

Inputs: ``on_segment(seg, now)``, ``poll(now)``, the API calls. Output:
``dispatch(now) -> list[TcpSegment]`` (``output.py``). Events (``Readable``,
``Writable``, ``Connected``, ``Closed``, ``SocketError``) go to the emit
function; the layer adds ``Accepted`` for listeners. ``Readable`` is
edge-triggered: after one, the next is emitted only once ``recv`` has been
called again.

Transition table (RFC 9293 §3.3.2 figure 5; "rcv" = segment arrives):

==============  ==========================================  ==============  =================
state           event                                       next            sends
==============  ==========================================  ==============  =================
CLOSED          open_active                                 SYN-SENT        SYN
LISTEN          rcv SYN (listener, ``open_passive``)        SYN-RECEIVED    SYN,ACK
SYN-SENT        rcv SYN,ACK acking our SYN                  ESTABLISHED     ACK
SYN-SENT        rcv SYN (simultaneous open)                 SYN-RECEIVED    SYN,ACK
SYN-SENT        rcv RST,ACK acking our SYN                  CLOSED          - (ECONNREFUSED)
SYN-SENT        rcv ACK not acking our SYN                  SYN-SENT        RST
SYN-SENT        close                                       CLOSED          -
SYN-SENT        SYN retries exhausted                       CLOSED          - (ETIMEDOUT)
SYN-RECEIVED    rcv ACK of our SYN                          ESTABLISHED     -
SYN-RECEIVED    rcv RST (passive open)                      CLOSED          - (back to LISTEN)
SYN-RECEIVED    rcv RST (active open)                       CLOSED          - (ECONNREFUSED)
SYN-RECEIVED    rcv duplicate SYN                           SYN-RECEIVED    SYN,ACK
ESTABLISHED     close / shutdown_write                      FIN-WAIT-1      FIN after data
ESTABLISHED     rcv FIN                                     CLOSE-WAIT      ACK
ESTABLISHED     rcv RST == RCV.NXT                          CLOSED          - (ECONNRESET)
ESTABLISHED     rcv RST in window, != RCV.NXT               ESTABLISHED     challenge ACK
ESTABLISHED     rcv SYN                                     ESTABLISHED     challenge ACK
ESTABLISHED     abort                                       CLOSED          RST
ESTABLISHED     retries exhausted                           CLOSED          - (ETIMEDOUT)
FIN-WAIT-1      rcv ACK of FIN                              FIN-WAIT-2      -
FIN-WAIT-1      rcv FIN (our FIN not acked)                 CLOSING         ACK
FIN-WAIT-1      rcv FIN,ACK acking our FIN                  TIME-WAIT       ACK
FIN-WAIT-2      rcv FIN                                     TIME-WAIT       ACK
FIN-WAIT-2      timeout after close (orphan)                CLOSED          -
CLOSE-WAIT      close / shutdown_write                      LAST-ACK        FIN after data
CLOSING         rcv ACK of FIN                              TIME-WAIT       -
LAST-ACK        rcv ACK of FIN                              CLOSED          -
TIME-WAIT       rcv FIN again                               TIME-WAIT       ACK (2MSL restarted)
TIME-WAIT       rcv RST                                     TIME-WAIT       - (RFC 1337)
TIME-WAIT       2*MSL elapses                               CLOSED          -
==============  ==========================================  ==============  =================
"""

from __future__ import annotations

import errno
from dataclasses import replace

from stack.core.clock import s
from stack.core.events import Readable, Writable
from stack.core.stats import Drop
from stack.core.tcp.buffers import byte_view
from stack.core.tcp.congestion import Congestion
from stack.core.tcp.output import TcpOutput
from stack.core.tcp.rtt import ts_elapsed, ts_newer
from stack.core.tcp.seq import SEQ_MASK, unwrap
from stack.core.tcp.tcb import (
    DEFAULT_MSS4,
    DEFAULT_MSS6,
    MIN_MSS,
    RECEIVING,
    TcpState,
    window_shift,
)
from stack.wire.tcp import ACK, FIN, RST, SYN, URG, TcpSegment

PAWS_IDLE = s(24 * 24 * 3600)             # RFC 7323 §5.5: TS.Recent is invalid after 24 days idle
_PREDICT_MASK = SYN | FIN | RST | URG | ACK   # header prediction: of these, exactly ACK
_WRITABLE_STATES = frozenset({TcpState.SYN_SENT, TcpState.SYN_RECEIVED, TcpState.ESTABLISHED,
                              TcpState.CLOSE_WAIT})
_RESET_BY_PEER = frozenset({TcpState.ESTABLISHED, TcpState.FIN_WAIT_1, TcpState.FIN_WAIT_2,
                            TcpState.CLOSE_WAIT})


def _os_error(err: int) -> OSError:
    # OSError(errno, text) picks the subclass (ConnectionResetError, TimeoutError, ...).
    return OSError(err, errno.errorcode.get(err, str(err)))


class TcpConnection(TcpOutput):
    """A TCP connection: feed it segments and time, take segments and events out."""

    __slots__ = ()

    # --- opening ----------------------------------------------------------

    def open_active(self, now: int) -> None:
        """RFC 9293 §3.10.1 OPEN (active): send SYN, enter SYN-SENT."""
        assert self.state is TcpState.CLOSED
        self.rcv_wscale = window_shift(self.rcvbuf.limit) if self.config.window_scaling else 0
        self.state = TcpState.SYN_SENT
        self.snd_nxt = self.iss + 1
        self._out.append(self._syn_segment(now))
        self.rtt_seq, self.rtt_time = self.iss + 1, now
        self.rto_at = now + self.rtt.rto
        self.stats.count("tcp", "active_opens")

    def open_passive(self, syn: TcpSegment, now: int) -> None:
        """RFC 9293 §3.10.7.2 LISTEN, third check: a SYN for a listener."""
        assert self.state is TcpState.CLOSED
        self.passive = self.embryonic = True
        self._synchronize(syn, now)
        self._negotiate(syn, now)
        self.state = TcpState.SYN_RECEIVED
        self.snd_nxt = self.iss + 1
        self._out.append(self._syn_segment(now))
        self.rtt_seq, self.rtt_time = self.iss + 1, now
        self.rto_at = now + self.rtt.rto
        self.stats.count("tcp", "passive_opens")

    def open_from_cookie(self, seg: TcpSegment, peer_mss: int, wscale: int | None, sack: bool,
                         now: int) -> None:
        """RFC 4987 §3.6: the ACK of a SYN-cookie SYN-ACK recreates the connection."""
        assert self.state is TcpState.CLOSED
        self.passive = self.embryonic = True
        irs = (seg.seq - 1) & SEQ_MASK
        ts = (seg.ts[0], 0) if seg.ts is not None else None
        syn = TcpSegment(irs, 0, SYN, seg.window, b"", 0, peer_mss, wscale, sack, (), ts)
        self._synchronize(syn, now)
        self._negotiate(syn, now)
        self.snd_una = self.snd_nxt = self.iss + 1
        self.state = TcpState.SYN_RECEIVED
        self._enter(TcpState.ESTABLISHED, now)
        self.snd_wl1 = irs
        self.on_segment(seg, now)

    def _synchronize(self, syn: TcpSegment, now: int) -> None:
        self.irs = syn.seq
        self.rcv_nxt = self.irs + 1
        self.last_ack_sent = self.rcv_nxt
        self.rcv_adv = self.rcv_nxt + min(self.rcvbuf.space(), 0xFFFF)   # what a SYN advertises
        self.snd_wnd = self.max_snd_wnd = syn.window      # RFC 7323 §2.2: a SYN's window is unscaled
        self.snd_wl1 = self.irs
        self.snd_wl2 = self.iss

    def _negotiate(self, syn: TcpSegment, now: int) -> None:
        """Options from the peer's SYN (RFC 9293 §3.7.1, RFC 7323 §2.2/§3.2, RFC 2018 §2)."""
        cfg = self.config
        peer_mss = syn.mss or (DEFAULT_MSS6 if len(self.remote) == 16 else DEFAULT_MSS4)
        self.snd_mss = max(MIN_MSS, min(peer_mss, self.mss_local))
        self.wscale_ok = syn.wscale is not None and cfg.window_scaling
        if self.wscale_ok:
            self.snd_wscale = syn.wscale or 0
            self.rcv_wscale = window_shift(self.rcvbuf.limit)
        else:
            self.snd_wscale = self.rcv_wscale = 0
        self.ts_ok = syn.ts is not None and cfg.timestamps
        if syn.ts is not None and self.ts_ok:
            self.ts_recent, self.ts_recent_at = syn.ts[0], now
        self.sack_ok = syn.sack_permitted and cfg.sack
        if self.passive:
            # open_passive/open_from_cookie, right after the constructor: the Congestion
            # _init_send made is untouched (una = ISS + 1); set what the SYN decided
            # instead of building a second one (per connection)
            cc = self.cc
            cc.sack = self.sack_ok
            cc.set_mss(self.payload_mss(), reset_window=True)
        else:
            self.cc = Congestion(self.payload_mss(), self.iss + 1, sack=self.sack_ok,
                                 initial_segments=cfg.initial_cwnd)

    # --- segment arrival --------------------------------------------------

    def on_segment(self, seg: TcpSegment, now: int) -> None:
        """RFC 9293 §3.10.7: one arriving segment (ports already matched)."""
        st = self.state
        if st is TcpState.ESTABLISHED and seg.flags & _PREDICT_MASK == ACK and self._predicted(seg, now):
            return
        if st is TcpState.CLOSED or st is TcpState.LISTEN:
            self.stats.drop(Drop.TCP_CLOSED)
            return
        if st is TcpState.SYN_SENT:
            self._on_syn_sent(seg, now)
            return
        seq = unwrap(seg.seq, self.rcv_nxt)
        if st is TcpState.SYN_RECEIVED and seg.flags & SYN and seq == self.irs:
            if not seg.flags & ACK or seg.flags & RST:
                self._out.append(self._syn_segment(now))   # our SYN,ACK was lost: resend it
                return
            # Simultaneous open: the peer's SYN,ACK; its ACK is what matters.
            seg = seg._replace(flags=seg.flags & ~SYN)
            seq += 1
        if not self._check_paws(seg, seq, now):
            return
        checked = self._check_sequence(seg, seq, now)
        if checked is None:
            return
        if self.ts_ok:
            if seg.ts is not None:
                self._update_ts_recent(seg.ts[0], seq, now)
            elif not seg.flags & RST:
                # RFC 7323 §3.2 says SHOULD drop a non-RST segment without TSopt once
                # timestamps are on; like Linux we take it (a middlebox may strip the
                # option), and count it: `tapstack stats` shows the peer's irregularity.
                self.stats.count("tcp", "in_missing_ts")
        seq_in, payload, flags = checked
        if flags & RST:
            self._check_rst(seq, now)
            return
        if flags & SYN:
            self._check_syn(now)
            return
        if not flags & ACK:
            self.stats.drop(Drop.TCP_NO_ACK)                # RFC 9293 fifth: no ACK, drop
            return
        if not self._check_ack(seg, seq_in, now):
            return
        if self.keepalive:
            self._arm_keepalive(now)
        if payload:
            self._process_text(seq_in, payload, now)
        if flags & FIN:
            self._check_fin(seq_in + len(payload), now)

    def _predicted(self, seg: TcpSegment, now: int) -> bool:
        """Header prediction (Van Jacobson; Linux tcp_rcv_established): the segment an
        ESTABLISHED connection expects next, an ACK (no SYN, FIN, RST, URG) at RCV.NXT
        with an acceptable ACK, no SACK blocks, a timestamp not older than TS.Recent and
        in-order text that fits the window, is handled here with what the steps below
        would do for it, and nothing else. False: the full steps run."""
        nxt = self.rcv_nxt
        if seg.seq != nxt & SEQ_MASK or seg.sack_blocks:
            return False
        ts = seg.ts
        if self.ts_ok and (ts is None or ts_newer(self.ts_recent, ts[0])):
            return False
        payload = seg.payload
        n = len(payload)
        if n and (self.ooo.starts or self.app_closed or self.ooo_fin is not None or n > self.rcv_window()):
            return False
        una = self.snd_una
        ack = unwrap(seg.ack, una)
        if ack < una or ack > self.snd_nxt:
            return False
        # first (acceptable, nothing to trim) and PAWS passed: RFC 7323 §4.3 TS.Recent
        if ts is not None and self.ts_ok and nxt <= self.last_ack_sent:
            self.ts_recent, self.ts_recent_at = ts[0], now
        self._check_ack(seg, nxt, now)                      # fifth; True for such an ACK
        if self.keepalive:
            self._arm_keepalive(now)
        if n:
            # seventh, in order with nothing queued behind it
            if n > self.rcv_mss:
                self.rcv_mss = min(n, self.mss_local)
            self.rcvbuf.append(payload)
            self.rcv_nxt = nxt + n
            self._readable()
            self._schedule_ack(now)
        return True

    def _check_paws(self, seg: TcpSegment, seq: int, now: int) -> bool:
        """RFC 7323 §5.3 R1: drop a segment whose TSval is older than TS.Recent."""
        if not self.ts_ok or seg.ts is None or seg.flags & RST:
            return True
        if ts_newer(self.ts_recent, seg.ts[0]):
            if now - self.ts_recent_at > PAWS_IDLE:
                return True                                 # RFC 7323 §5.5: TS.Recent expired
            if (seq == self.rcv_nxt and not seg.payload and not seg.flags & (SYN | FIN)
                    and unwrap(seg.ack, self.snd_una) <= self.snd_una):
                # A reordered pure ACK carries no data to protect and may carry SACK
                # blocks; Linux lets it through too (tcp_disordered_ack).
                return True
            self.ack_now = True
            self.stats.drop(Drop.TCP_PAWS)
            return False
        return True

    def _update_ts_recent(self, tsval: int, seq: int, now: int) -> None:
        # RFC 7323 §4.3 (2): SEG.TSval >= TS.Recent and SEG.SEQ =< Last.ACK.sent.
        if seq <= self.last_ack_sent and not ts_newer(self.ts_recent, tsval):
            self.ts_recent, self.ts_recent_at = tsval, now

    def _check_sequence(self, seg: TcpSegment, seq: int, now: int) -> tuple[int, bytes, int] | None:
        """RFC 9293 §3.10.7.4 first: acceptability test, then trim to the window.

        Returns (seq, payload, flags) of what is inside the window, or None.
        """
        length = seg.seg_len
        nxt = self.rcv_nxt
        wnd = self.rcv_window()
        if length == 0:
            ok = seq == nxt if wnd == 0 else nxt <= seq < nxt + wnd
        else:
            # A segment overlapping the window anywhere (Linux's form of the test; it also
            # admits one spanning the whole window). With a zero window, one at RCV.NXT is
            # kept for its ACK and RST ("special allowance", RFC 9293 §3.10.7.4).
            ok = seq + length > nxt and (seq < nxt + wnd or seq == nxt)
        if not ok:
            if not seg.flags & RST:
                self.ack_now = True                         # <SEQ=SND.NXT><ACK=RCV.NXT><CTL=ACK>
                if self.state is TcpState.TIME_WAIT and seg.flags & FIN:
                    self.time_wait_at = now + 2 * self.config.msl   # RFC 9293: restart 2 MSL
            # entirely before RCV.NXT: a duplicate (retransmission, keep-alive); else beyond the
            # window, or inside the advertised one while the stack's TCP memory is spent
            self.stats.drop(Drop.TCP_DUPLICATE if seq + length <= nxt
                            else Drop.TCP_MEM_PRESSURE if seq < self.rcv_adv else Drop.TCP_OUT_OF_WINDOW)
            return None
        flags, payload = seg.flags, seg.payload
        if seq < nxt:
            cut = nxt - seq
            if flags & SYN:
                flags &= ~SYN
                cut -= 1
            payload = payload[cut:]
            seq = nxt
        if seq + len(payload) > nxt + wnd:
            if nxt + wnd < self.rcv_adv:
                # cut inside what we advertised: the stack's TCP memory is spent (the
                # segment goes on for its ACK; a segment refused whole is a drop above)
                self.stats.count("tcp", "mem_pressure_trims")
            payload = payload[: max(0, nxt + wnd - seq)]
            flags &= ~FIN
            self.ack_now = True                             # tell the sender where the window ends
        return seq, payload, flags

    def _check_rst(self, seq: int, now: int) -> None:
        """RFC 9293 §3.10.7.4 second, with RFC 5961 §3.2."""
        if seq != self.rcv_nxt:
            self.stats.drop(Drop.TCP_RST_IN_WINDOW)
            self._challenge_ack(now)                        # in window but not exact
            return
        st = self.state
        self.stats.count("tcp", "in_rsts")
        if st is TcpState.SYN_RECEIVED:
            if self.passive:
                self._enter(TcpState.CLOSED, now)           # "return to LISTEN"
            else:
                self._fail(errno.ECONNREFUSED, now)
        elif st in _RESET_BY_PEER:
            self._fail(errno.ECONNRESET, now)
        elif st is TcpState.CLOSING or st is TcpState.LAST_ACK:
            self._enter(TcpState.CLOSED, now)
        else:
            # TIME-WAIT: RFC 1337 §3 (TIME-WAIT assassination), the RST is ignored.
            self.stats.drop(Drop.TCP_RST_TIME_WAIT)

    def _check_syn(self, now: int) -> None:
        """RFC 9293 §3.10.7.4 fourth, with RFC 5961 §4.2."""
        if self.state is TcpState.SYN_RECEIVED and self.passive:
            self._enter(TcpState.CLOSED, now)               # "return to LISTEN"
            return
        self.stats.drop(Drop.TCP_SYN_IN_WINDOW)
        self._challenge_ack(now)

    def _challenge_ack(self, now: int) -> None:
        """RFC 5961 §7: challenge ACKs, at most ``challenge_ack_limit`` a second."""
        if now - self._challenge_start >= s(1):
            self._challenge_start, self._challenge_count = now, 0
        if self._challenge_count >= self.config.challenge_ack_limit:
            self.stats.count("tcp", "challenge_acks_limited")
            return
        self._challenge_count += 1
        self.stats.count("tcp", "challenge_acks")
        self.ack_now = True

    def _check_ack(self, seg: TcpSegment, seq: int, now: int) -> bool:
        """RFC 9293 §3.10.7.4 fifth; False when the segment is to be dropped."""
        ack = unwrap(seg.ack, self.snd_una)
        if self.state is TcpState.SYN_RECEIVED:
            if not self.snd_una < ack <= self.snd_nxt:
                self.stats.drop(Drop.TCP_BAD_ACK)
                self._out.append(self._rst(ack))            # <SEQ=SEG.ACK><CTL=RST>
                return False
            self.snd_wnd = seg.window << self.snd_wscale
            self.snd_wl1, self.snd_wl2 = seq, ack
            self._ack_new(ack, seg, now)
            self._established(now)
            return True
        if ack > self.snd_nxt or ack < self.snd_una - self.max_snd_wnd:
            # RFC 5961 §5.2 (and RFC 9293: an ACK for something not yet sent).
            self.stats.drop(Drop.TCP_ACK_UNSENT if ack > self.snd_nxt else Drop.TCP_ACK_TOO_OLD)
            self._challenge_ack(now)
            return False
        una_before = self.snd_una
        blocks = self._sack_blocks(seg) if self.sack_ok and seg.sack_blocks else []
        if ack < una_before and not seg.payload and not seg.flags & FIN and not blocks:
            # RFC 9293 fifth: "If the ACK is a duplicate (SEG.ACK < SND.UNA), it can be
            # ignored"; with nothing else in it (no text, FIN or usable SACK blocks) it is.
            self.stats.drop(Drop.TCP_OLD_ACK)
            if self.keepalive:
                self._arm_keepalive(now)                    # the peer is there all the same
            return False
        duplicate = (ack == una_before and self.snd_nxt > una_before and not seg.payload
                     and not seg.flags & (SYN | FIN) and seg.window << self.snd_wscale == self.snd_wnd)
        if ack > una_before:
            self._ack_new(ack, seg, now)
        if ack >= self.snd_una and (self.snd_wl1 < seq or (self.snd_wl1 == seq and self.snd_wl2 <= ack)):
            self.snd_wnd = seg.window << self.snd_wscale   # RFC 9293: SND.WND update rule
            self.snd_wl1, self.snd_wl2 = seq, ack
            self.max_snd_wnd = max(self.max_snd_wnd, self.snd_wnd)
        if self.snd_nxt > una_before:
            self.cc.on_ack(una_before, self.snd_una, self.snd_nxt, blocks, duplicate)
        if ack > una_before:
            self._after_ack_of_fin(now)
        return True

    def _sack_blocks(self, seg: TcpSegment) -> list[tuple[int, int]]:
        """RFC 2018 §4 blocks as unwrapped ranges inside (SND.UNA, SND.NXT]; D-SACKs dropped."""
        out = []
        for left, right in seg.sack_blocks:
            lo, hi = unwrap(left, self.snd_una), unwrap(right, self.snd_una)
            if self.snd_una < lo < hi <= self.snd_nxt:
                out.append((lo, hi))
        if len(out) < len(seg.sack_blocks):
            # ignored, the segment itself goes on (Linux TCPSACKDiscard)
            self.stats.count("tcp", "sack_discards", len(seg.sack_blocks) - len(out))
        return out

    def _ack_new(self, ack: int, seg: TcpSegment, now: int) -> None:
        """SND.UNA advances: free the buffer, take an RTT sample, restart the timer."""
        self.sndbuf.ack(ack)
        self.snd_una = ack
        self.progress = True
        self.retries = self.probe_count = 0
        if self.ts_ok and seg.ts is not None and seg.ts[1]:
            r = ts_elapsed(now, self.ts_offset, seg.ts[1])    # RFC 7323 §4.1
            if r >= 0:
                self.rtt.sample(r)
        elif self.rtt_seq is not None and ack >= self.rtt_seq:
            self.rtt.sample(now - self.rtt_time)              # RFC 6298 §3 (Karn-safe: untimed on resend)
            self.rtt_seq = None
        # RFC 6298 (5.2)/(5.3): stop the timer when all is acked, else restart it.
        self.rto_at = now + self.rtt.rto if self.snd_nxt > ack else None
        # Writable once a third of the buffer is free again (Linux sk_stream_write_space),
        # for a writer that found it full (a short send, or send_space read as 0).
        if self.want_writable and (self.sndbuf.space() * 3 >= self.sndbuf.limit or not self.sndbuf.size):
            self.want_writable = False
            self._event(Writable(self))

    def _established(self, now: int) -> None:
        if self.syn_retransmitted:
            self.rtt.reset_after_syn_timeout()              # RFC 6298 (5.7)
        self._enter(TcpState.ESTABLISHED, now)
        if self.fin_queued:
            self.state = TcpState.FIN_WAIT_1                # a close() while opening
        self._wake(None)

    def _after_ack_of_fin(self, now: int) -> None:
        if not (self.fin_queued and self.snd_una > self.sndbuf.end):
            return
        st = self.state
        if st is TcpState.FIN_WAIT_1:
            self._enter(TcpState.FIN_WAIT_2, now)
        elif st is TcpState.CLOSING:
            self._enter(TcpState.TIME_WAIT, now)
        elif st is TcpState.LAST_ACK:
            self._enter(TcpState.CLOSED, now)

    def _process_text(self, seq: int, payload: bytes, now: int) -> None:
        """RFC 9293 §3.10.7.4 seventh: deliver in-order text, queue the rest."""
        if self.state not in RECEIVING:
            self.stats.drop(Drop.TCP_DATA_AFTER_FIN)        # after a FIN: ignore
            return
        if self.app_closed:
            # RFC 9293 §3.10.4 / RFC 2525 §2.17: nobody will read this, reset.
            self.stats.count("tcp", "abort_on_data")
            self._out.append(self._rst(self.snd_nxt))
            self._fail(errno.ECONNRESET, now)
            return
        n = len(payload)
        if n > self.rcv_mss:
            self.rcv_mss = min(n, self.mss_local)
        if seq != self.rcv_nxt:
            if not self.ooo.insert(seq, payload):
                mem = self.ooo.mem
                self.stats.drop(Drop.TCP_MEM_PRESSURE if mem.used + n > mem.limit else Drop.TCP_OOO_LIMIT)
            self.ack_now = True                             # RFC 5681 §4.2: out of order, ACK now
            return
        self.rcvbuf.append(payload)
        self.rcv_nxt += n
        if self.ooo.starts:
            more = self.ooo.pop_ready(self.rcv_nxt)
            if more is not None:
                self.rcvbuf.append(more)
                self.rcv_nxt += len(more)
                self.ack_now = True                         # RFC 5681 §4.2: a gap was filled
            if self.ooo_fin == self.rcv_nxt:
                self._receive_fin(now)
        self._readable()
        self._schedule_ack(now)

    def _readable(self) -> None:
        # Edge-triggered (as EPOLLET): one Readable until the application calls recv()
        # again, not one per segment of a batch (each would find the data already read).
        if self.read_armed:
            self.read_armed = False
            self._event(Readable(self))

    def _schedule_ack(self, now: int) -> None:
        """RFC 5681 §4.2 / RFC 9293 §3.8.6.3: ACK every second full segment, else delay."""
        if self.ack_now:
            return
        if self.rcv_nxt - self.last_ack_sent >= 2 * self.rcv_mss:
            self.ack_now = True
        elif self.delayed_ack_at is None:
            self.delayed_ack_at = now + self.config.delayed_ack

    def _check_fin(self, fin_seq: int, now: int) -> None:
        """RFC 9293 §3.10.7.4 eighth."""
        if fin_seq == self.rcv_nxt:
            self._receive_fin(now)
        elif fin_seq > self.rcv_nxt:
            self.ooo_fin = fin_seq                          # processed once the gap is filled
            self.ack_now = True

    def _receive_fin(self, now: int) -> None:
        self.ooo_fin = None
        self.rcv_nxt += 1
        self.fin_received = True
        self.ack_now = True
        self._readable()
        st = self.state
        if st is TcpState.ESTABLISHED or st is TcpState.SYN_RECEIVED:
            self._enter(TcpState.CLOSE_WAIT, now)
        elif st is TcpState.FIN_WAIT_1:
            self._enter(TcpState.CLOSING, now)
        elif st is TcpState.FIN_WAIT_2:
            self._enter(TcpState.TIME_WAIT, now)

    # --- SYN-SENT (RFC 9293 §3.10.7.3) -----------------------------------

    def _on_syn_sent(self, seg: TcpSegment, now: int) -> None:
        flags = seg.flags
        ack = 0
        if flags & ACK:
            ack = unwrap(seg.ack, self.snd_una)
            if ack <= self.iss or ack > self.snd_nxt:
                # first: an unacceptable ACK gets <SEQ=SEG.ACK><CTL=RST> (unless it is a RST)
                if not flags & RST:
                    self._out.append(self._rst(ack))
                self.stats.drop(Drop.TCP_BAD_SEGMENT)
                return
        if flags & RST:
            # second: with an acceptable ACK the reset is valid (RFC 5961 §3.2 for SYN-SENT)
            if flags & ACK:
                self._fail(errno.ECONNREFUSED, now)
            else:
                self.stats.drop(Drop.TCP_RST_NO_ACK)
            return
        if not flags & SYN:
            self.stats.drop(Drop.TCP_NO_SYN)                # fifth: drop
            return
        self._synchronize(seg, now)
        self._negotiate(seg, now)
        if not flags & ACK:
            # Simultaneous open (RFC 9293 §3.5 figure 7): SYN,ACK with our ISS again.
            self._enter(TcpState.SYN_RECEIVED, now)
            self._out.append(self._syn_segment(now))
            return
        self.snd_una = ack
        self.snd_wl2 = ack
        if self.ts_ok and seg.ts is not None and seg.ts[1]:
            r = ts_elapsed(now, self.ts_offset, seg.ts[1])
            if r >= 0:
                self.rtt.sample(r)
        elif self.rtt_seq is not None and not self.syn_retransmitted:
            self.rtt.sample(now - self.rtt_time)
        self.rtt_seq = None
        self.rto_at = None
        self.retries = 0
        self.ack_now = True
        self._established(now)
        if seg.payload:
            self._process_text(self.rcv_nxt, seg.payload, now)
        if flags & FIN:
            self._check_fin(self.rcv_nxt, now)

    # --- hooks for the layer ----------------------------------------------

    def accepts_new_syn(self, seg: TcpSegment) -> bool:
        """RFC 9293 §3.10.7.4 fourth (TIME-WAIT) with RFC 6191: a SYN that may open a
        new incarnation of this 4-tuple (newer timestamp, or higher sequence number)."""
        if self.state is not TcpState.TIME_WAIT or seg.flags & (ACK | RST) or not seg.flags & SYN:
            return False
        if self.ts_ok and seg.ts is not None:
            return ts_newer(seg.ts[0], self.ts_recent)
        return unwrap(seg.seq, self.rcv_nxt) > self.rcv_nxt

    def leave_time_wait(self, now: int) -> None:
        """Close a TIME-WAIT connection early (the layer's bound on TIME-WAIT entries)."""
        if self.state is TcpState.TIME_WAIT:
            self._enter(TcpState.CLOSED, now)

    def on_icmp_error(self, err: int, seq: int, mtu: int, now: int) -> bool:
        """An ICMP error quoting one of our segments (RFC 5927 §4.1: its sequence number
        must be in flight). EMSGSIZE carries the new path MTU. Hard errors end an opening
        connection; in synchronized states they are soft (RFC 5461 §4), reported at timeout."""
        quoted = unwrap(seq, self.snd_una)
        if self.state is TcpState.SYN_SENT:
            valid = quoted == self.iss
        else:
            valid = self.snd_una <= quoted < self.snd_nxt
        if not valid:
            self.stats.drop(Drop.ICMP_ERROR_NO_MATCH)
            return False
        if err == errno.EMSGSIZE:
            self.on_path_mtu(mtu)
        elif self.state is TcpState.SYN_SENT:
            self._fail(err, now)
        elif self.state is TcpState.SYN_RECEIVED and self.passive:
            self._enter(TcpState.CLOSED, now)
        else:
            self.soft_error = err
        return True

    def on_path_mtu(self, mtu: int) -> None:
        """RFC 8201 §4 / RFC 1191: a smaller path MTU; resend what no longer fits."""
        v6 = len(self.remote) == 16
        mtu = max(mtu, 1280 if v6 else 576)
        new = mtu - (40 if v6 else 20) - 20
        if new >= self.snd_mss:
            return
        self.snd_mss = max(new, MIN_MSS)
        self.cc.set_mss(self.payload_mss(), reset_window=False)
        if self.state in _WRITABLE_STATES or self.snd_nxt > self.snd_una:
            self.cc.on_mtu_reduced(self.snd_una, self.snd_nxt)
        self.stats.count("tcp", "pmtu_reductions")

    # --- the byte-stream API (for the asyncio layer) -----------------------

    def send(self, data: bytes | bytearray | memoryview, now: int | None = None) -> int:
        """Queue data; returns how many bytes the send buffer took (0 when full).

        Raises the connection's error (``ConnectionResetError``...), or
        ``BrokenPipeError`` after ``shutdown_write``/``close`` or once closed.
        Output happens at the next ``poll`` of the layer, or now if ``now`` is given.
        A short count (or ``send_space`` read as 0) arms one ``Writable`` event,
        emitted when a third of the send buffer is free again.
        """
        if self.error is not None:
            raise _os_error(self.error)
        if self.fin_queued or self.state not in _WRITABLE_STATES:
            raise _os_error(errno.EPIPE)
        data = byte_view(data)          # lengths in bytes, whatever the view's items
        n = self.sndbuf.append(data)
        if n < len(data):
            self.want_writable = True
        if n:
            self._wake(now)
        return n

    def recv(self, max_bytes: int = 65536, now: int | None = None) -> bytes:
        """Up to ``max_bytes`` of received data; ``b""`` at end of stream.

        Raises ``BlockingIOError`` when nothing is there yet, or the connection's
        error (``ConnectionResetError``...) once the buffered data is read.
        Every call re-arms ``Readable``: after one, the next comes only once
        ``recv`` was called again (a reader reads until ``BlockingIOError``).
        """
        self.read_armed = True
        if self.rcvbuf.size:
            data = self.rcvbuf.read(max_bytes)
            self._maybe_window_update()
            return data
        if self.fin_received:
            return b""
        if self.error is not None:
            raise _os_error(self.error)
        if self.state is TcpState.CLOSED or self.app_closed:
            return b""
        raise BlockingIOError(errno.EAGAIN, "no data yet")

    def _maybe_window_update(self) -> None:
        """Reading opened the window: tell the peer once it can grow by its current size
        and by at least min(buffer/2, MSS) (Linux tcp_cleanup_rbuf; RFC 9293 §3.8.6.2.2)."""
        if self.state not in RECEIVING:
            return
        current = max(self.rcv_adv - self.rcv_nxt, 0)
        free = self.rcvbuf.space()
        if free - current >= max(current, min(self.rcvbuf.limit // 2, self.mss_local)):
            # Not sent at once: it leaves at the layer's next poll (an instant already
            # due), or before that on whatever this connection sends first (an echo's
            # answer to what was just read carries it: one segment instead of two).
            self.ack_now = True
            self._wake(None)

    def shutdown_write(self, now: int | None = None) -> None:
        """RFC 9293 §3.10.4 CLOSE of the sending direction: FIN after the last queued byte."""
        if self._queue_fin():
            self._wake(now)

    def _queue_fin(self) -> bool:
        st = self.state
        if self.fin_queued or st not in _WRITABLE_STATES:
            return False
        self.fin_queued = True
        if st is TcpState.ESTABLISHED:
            self.state = TcpState.FIN_WAIT_1
        elif st is TcpState.CLOSE_WAIT:
            self.state = TcpState.LAST_ACK
        # SYN-SENT / SYN-RECEIVED: FIN-WAIT-1 once established (``_established``).
        return True

    def close(self, now: int | None = None) -> None:
        """Both directions: no more reads; the FIN goes after every queued byte.
        Unread received data turns the close into an abort (RFC 2525 §2.17, as Linux)."""
        if self.state is TcpState.CLOSED:
            self.app_closed = True
            return
        if self.state is TcpState.SYN_SENT:
            self.app_closed = True
            self._enter(TcpState.CLOSED, now or 0)          # RFC 9293 §3.10.4: delete the TCB
            self._wake(now)
            return
        self.app_closed = True
        if self.rcvbuf.size:
            self.abort(now)
            return
        self._queue_fin()
        if self.state is TcpState.FIN_WAIT_2 and now is not None:
            self.fin_wait2_at = now + self.config.fin_wait2_timeout
        self._wake(now)                                     # one flush: the FIN (or the timer)

    def abort(self, now: int | None = None) -> None:
        """RFC 9293 §3.10.5 ABORT: RST in synchronized states, then CLOSED."""
        if self.state in _RESET_BY_PEER or self.state is TcpState.SYN_RECEIVED:
            self._out.append(self._rst(self.snd_nxt))       # <SEQ=SND.NXT><CTL=RST>
        self.app_closed = True
        self.sndbuf.clear()
        if self.state is not TcpState.CLOSED:
            self._enter(TcpState.CLOSED, now or 0)
        self._wake(now)

    def set_nodelay(self, flag: bool) -> None:
        """TCP_NODELAY: no Nagle (RFC 9293 §3.7.4 allows turning it off)."""
        self.nodelay = flag
        if flag and self.sndbuf.end > self.snd_nxt:
            self._wake(None)                                # Nagle held data back: it may go now

    def set_keepalive(self, enabled: bool, idle: int | None = None, interval: int | None = None,
                      count: int | None = None, now: int | None = None) -> None:
        """SO_KEEPALIVE with TCP_KEEPIDLE/KEEPINTVL/KEEPCNT-like overrides (ns)."""
        cfg = self.config
        self.config = replace(cfg, keepalive_idle=idle or cfg.keepalive_idle,
                              keepalive_interval=interval or cfg.keepalive_interval,
                              keepalive_count=count or cfg.keepalive_count)
        self.keepalive = enabled
        self.keepalive_at = None
        if enabled:
            self._wake(now)                                 # armed at the next dispatch

    @property
    def recv_queue(self) -> int:
        """Bytes received and not read (``ss`` Recv-Q)."""
        return len(self.rcvbuf)

    @property
    def send_queue(self) -> int:
        """Bytes queued and not acknowledged (``ss`` Send-Q)."""
        return len(self.sndbuf)

    @property
    def send_space(self) -> int:
        """Bytes ``send`` would take now. Reading 0 arms ``Writable`` (like a short send)."""
        space = self.sndbuf.space() if self.state in _WRITABLE_STATES and not self.fin_queued else 0
        if space == 0 and self.state in _WRITABLE_STATES and not self.fin_queued:
            self.want_writable = True
        return space

    @property
    def at_eof(self) -> bool:
        return self.fin_received and not self.rcvbuf.size

    def readable(self) -> bool:
        """True when ``recv`` would not raise BlockingIOError."""
        return self.rcvbuf.size > 0 or self.fin_received or self.error is not None \
            or self.state is TcpState.CLOSED
