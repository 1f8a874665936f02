"""The event loop around the core: TAP fds in, frames out, one timer.

``Driver`` registers ``add_reader`` for each TAP fd. A readable fd is read until it is
empty or ``batch`` frames were read; each frame goes to ``stack.receive(ifindex,
frame, now)``. After every batch, timer and control call, ``service()`` writes
``stack.drain_tx()`` to the TAPs, hands ``stack.drain_events()`` to the listeners,
forwards core notes to ``logging``, and schedules one ``loop.call_later`` at
``stack.poll_at()``: the delay is ``deadline - clock.now()`` so ``loop.time()`` and
core Instants never mix (GUIDE §5).

Listeners (``add_listener(cb)``, ``cb(events: list[object])``) run after core returned,
never inside a core call; a listener may call core again (its output is flushed in the
same ``service()``). ``set_faults(ifindex, FaultConfig)`` puts a seeded fault injector
(``stack.link.faults``) on a link's receive and/or transmit side; its held frames
share the one timer. pcap files show the wire, i.e. frames before rx faults and after
tx faults (a GSO frame bound for a link without offloads is cut in Python first, so both
see the frames the kernel gets). Watchers (``add_watcher(cb)``, ``cb()``) run after each service, for
conditions such as "the stack is ready".

Fast path (``fastpath``, a ``stack.link.fastpath.FastPath``): while no capture, fault
injection or trace is on, each TAP is read through it: frames of flows core has
hinted (``stack/core/flows.py``) are forwarded or answered in C, the rest come back
as from ``read_batch``. After every service the hints core left are installed; when
``stack.flow_epoch()`` moves the table is emptied first. ``fold_fastpath()`` adds what
the fast path did to core's counters (before every control query and stats).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Callable
from typing import Any

from stack.core.flows import FOLD_COUNTERS
from stack.link.faults import FaultConfig, FaultInjector
from stack.link.pcap import PcapSet
from stack.link.tap import LinkGone, TapLink
from stack.wire.gso import GsoChain, joined, offload_of

log = logging.getLogger("tapstack.driver")
core_log = logging.getLogger("tapstack.core")

LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}
MAX_SERVICE_ROUNDS = 64
BUSY_POLL_MAX_NS = 1_000_000     # one busy-poll run yields to the loop after 1 ms
# fast-path write counters (stack.link.fastpath) -> the TapLink counter they add to
FASTPATH_TX_COUNTERS = {"tx_full": "tx_queue_full", "tx_down": "tx_link_down", "tx_errors": "tx_errors",
                      "tx_gso": "tx_gso"}


class MonotonicClock:
    """Core time from ``time.monotonic_ns()``."""

    def now(self) -> int:
        return time.monotonic_ns()


Listener = Callable[[list[object]], None]


class Driver:
    def __init__(self, stack: Any, clock: Any, loop: asyncio.AbstractEventLoop, *, batch: int = 64,
                 pcap: PcapSet | None = None, busy_poll_us: int = 0, fastpath: Any = None) -> None:
        self.stack = stack
        self.clock = clock
        self.loop = loop
        self.batch = batch
        self.pcap = pcap
        self.links: dict[int, TapLink] = {}
        self.gone: dict[int, TapLink] = {}
        self._listeners: list[Listener] = []
        self._watchers: list[Callable[[], None]] = []
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: int | None = None
        self._servicing = False
        self._again = False
        self.running = False
        self.tx_no_link = 0
        self.core_errors = 0
        self._poll_failed = False
        self.faults_rx: dict[int, FaultInjector] = {}
        self.faults_tx: dict[int, FaultInjector] = {}
        self.listener_errors = 0
        self.busy_poll_ns = busy_poll_us * 1000
        self.busy_polls = 0
        self.fastpath = fastpath
        self._fp_epoch: object = None
        self._fp_folded: dict[int, dict[str, int]] = {}
        self.fp_installs = 0
        self.fp_clears = 0
        if fastpath is not None:
            stack.flow_hints = []
        if hasattr(stack, "tx_chains"):
            stack.tx_chains = True      # TSO segments come unjoined (GsoChain): see _write
        # core's begin_batch/end_batch around the frames of one read (TCP: one ACK per run)
        self._batching = hasattr(stack, "begin_batch") and hasattr(stack, "end_batch")
        if pcap is not None and hasattr(stack, "loop_tap"):
            stack.loop_tap = lambda frame: pcap.write("lo", frame)

    # -- setup -------------------------------------------------------------

    def add_link(self, ifindex: int, link: TapLink, *, gro: bool = True) -> None:
        """Read ``link`` for interface ``ifindex``; ``gro``: the fast path merges its TCP segments."""
        self.links[ifindex] = link
        if self.fastpath is not None and isinstance(link, TapLink):
            self.fastpath.add_link(ifindex, link, gro=gro)      # False (slow path only) past 64 links
        if self.running:
            self.loop.add_reader(link.fileno(), self._on_readable, ifindex)

    def set_faults(self, ifindex: int, cfg: FaultConfig) -> None:
        """Impair link ``ifindex`` (direction from ``cfg``); tx uses seed + 1."""
        if cfg.direction in ("rx", "both"):
            self.faults_rx[ifindex] = FaultInjector(cfg)
        if cfg.direction in ("tx", "both"):
            self.faults_tx[ifindex] = FaultInjector(dataclasses.replace(cfg, seed=cfg.seed + 1))

    def add_listener(self, cb: Listener) -> None:
        self._listeners.append(cb)

    def remove_listener(self, cb: Listener) -> None:
        if cb in self._listeners:
            self._listeners.remove(cb)

    def add_watcher(self, cb: Callable[[], None]) -> None:
        self._watchers.append(cb)

    def remove_watcher(self, cb: Callable[[], None]) -> None:
        if cb in self._watchers:
            self._watchers.remove(cb)

    def start(self) -> None:
        self.running = True
        for ifindex, link in self.links.items():
            self.loop.add_reader(link.fileno(), self._on_readable, ifindex)
        self.service()

    def stop(self) -> None:
        self.running = False
        for link in self.links.values():
            if not link.closed:
                self.loop.remove_reader(link.fileno())
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    # -- input ---------------------------------------------------------------

    def _on_readable(self, ifindex: int) -> None:
        link = self.links.get(ifindex)
        if link is None:
            return
        try:
            frames, _ = self._read(ifindex, link, self.fastpath if self._fp_on() else None)
        except LinkGone as e:
            self._link_gone(ifindex, e)
            return
        if frames:
            self._process(ifindex, link, frames)
            self.service()
        # else nothing reached core (the fast path handled every frame, or a spurious
        # wake-up): no output, events or timers can have changed, so no service()
        if self.busy_poll_ns:
            self._busy_poll()

    def _busy_poll(self) -> None:
        """Keep reading every link for ``busy_poll_ns`` after the last frame (as Linux
        SO_BUSY_POLL): a request that follows our answer within the window is read at
        once, with no epoll sleep and wake-up in between. Bounded per call by
        BUSY_POLL_MAX_NS, so the control socket waits at most that long; a core
        deadline that falls due ends it at once."""
        clock = time.monotonic_ns
        start = clock()
        until = start + self.busy_poll_ns
        stop = start + BUSY_POLL_MAX_NS
        links = list(self.links.items())
        while True:
            got = work = False
            fp = self.fastpath if self._fp_on() else None
            for ifindex, link in links:
                try:
                    frames, consumed = self._read(ifindex, link, fp)
                except LinkGone as e:
                    self._link_gone(ifindex, e)
                    return
                if consumed:
                    got = True      # handled in C: a frame came, keep polling
                if frames:
                    got = work = True
                    self._process(ifindex, link, frames)
            if work:
                self.service()
            if got:
                self.busy_polls += 1
            t = clock()
            if got:
                until = t + self.busy_poll_ns
            if t >= until or t >= stop:
                return
            if self._timer_at is not None and self.clock.now() >= self._timer_at:
                return          # a core deadline is due: let the loop run the timer

    def _read(self, ifindex: int, link: TapLink, fp: Any) -> tuple[list[Any], int]:
        """One batch from a link: the frames left for core and how many C handled,
        through the fast path ``fp`` when given and the link has a slot in it."""
        if fp is not None and fp.has_link(ifindex):
            # frames with offload metadata as (bytes, Offload): _process hands both to core
            frames = fp.read_batch(ifindex, link, self.batch, pairs=True)
            return frames, fp.consumed
        return link.read_batch(self.batch), 0

    def _process(self, ifindex: int, link: TapLink, frames: list[Any]) -> None:
        if frames:
            now = self.clock.now()
            pcap = self.pcap
            inj = self.faults_rx.get(ifindex)
            # (bytes, Offload) pairs come only from the fast path, which is off while a
            # capture or fault injection is on (_fp_on): pcap and inj see OffloadBytes
            if pcap is not None:
                ts = time.time_ns()
                for frame in frames:
                    pcap.write(link.name, frame, ts)
            if inj is not None:
                for frame in frames:
                    inj.offer(frame, now)
                frames = inj.due(now)
            receive = self.stack.receive
            batched = len(frames) > 1 and self._batching
            if batched:
                self.stack.begin_batch()
            for frame in frames:
                try:
                    if type(frame) is tuple:
                        receive(ifindex, frame[0], now, frame[1])
                    else:
                        receive(ifindex, frame, now)
                except Exception:
                    self._core_error("receive")
            if batched:
                try:
                    self.stack.end_batch(now)
                except Exception:
                    self._core_error("end_batch")

    def _link_gone(self, ifindex: int, e: LinkGone) -> None:
        link = self.links.pop(ifindex)
        if self.fastpath is not None:
            self.fold_fastpath()
            self.fastpath.remove_link(ifindex)      # before the fd closes: no flow keeps it
            self._fp_folded.pop(ifindex, None)      # its counters are in core now
        self.gone[ifindex] = link
        if not link.closed:
            self.loop.remove_reader(link.fileno())
            link.close()
        # One line; the interface, its addresses, routes and neighbors leave core (the
        # fd is closed, so the reader cannot fire again). Link counters stay in stats.
        log.warning("%s: TAP device went away (%s); interface removed", link.name, e)
        self.faults_rx.pop(ifindex, None)
        self.faults_tx.pop(ifindex, None)
        remove = getattr(self.stack, "remove_interface", None)
        try:
            if remove is not None:
                remove(ifindex, self.clock.now())
            else:
                set_link = getattr(self.stack, "set_link", None)
                if set_link is not None:
                    set_link(ifindex, False, self.clock.now())
        except Exception:
            self._core_error("remove_interface")
        self.service()

    def _tick(self) -> None:
        self._timer = None
        self._timer_at = None
        now = self.clock.now()
        for ifindex, inj in list(self.faults_rx.items()):
            for frame in inj.due(now):
                if ifindex in self.links:
                    try:
                        self.stack.receive(ifindex, frame, now)
                    except Exception:
                        self._core_error("receive")
        for ifindex, inj in list(self.faults_tx.items()):
            self._write_now(ifindex, inj.due(now))
        try:
            self.stack.poll(now)
            self._poll_failed = False
        except Exception:
            self._poll_failed = True        # back off below, no busy loop on a stuck deadline
            self._core_error("poll")
        self.service()

    def _core_error(self, where: str) -> None:
        """A bug in core must not stop the loop: count it, log the first ones in full."""
        self.core_errors += 1
        n = self.core_errors
        if n <= 5 or n % 1000 == 0:
            log.exception("core %s failed (error #%d; the frame or timer is dropped)", where, n)

    # -- output ----------------------------------------------------------------

    def service(self) -> None:
        """Flush what core produced; safe to call from listeners and handlers."""
        if self._servicing:
            self._again = True
            return
        self._servicing = True
        try:
            for _ in range(MAX_SERVICE_ROUNDS):
                self._again = False
                self._write(self.stack.drain_tx())
                events = self.stack.drain_events()
                if events:
                    self._deliver(events)
                self._forward_notes()
                if not self._again and not self.stack.tx and not self.stack.events:
                    break
        finally:
            self._servicing = False
        if self.fastpath is not None:
            self._fp_install()
        self._reschedule()
        for watcher in list(self._watchers):
            try:
                watcher()
            except Exception:
                log.exception("watcher failed")

    # -- fast path ---------------------------------------------------------------

    def _fp_on(self) -> bool:
        """Frames go through the fast path: none of capture, faults or trace is on."""
        return self.fastpath is not None and self.pcap is None and not self.faults_rx \
            and not self.faults_tx and self.stack.tracer is None

    def _fp_install(self) -> None:
        fp = self.fastpath
        hints = self.stack.flow_hints
        epoch = self.stack.flow_epoch()
        if epoch != self._fp_epoch:
            fp.clear()
            self.fp_clears += 1
            self._fp_epoch = epoch
        if not hints:
            return
        if self._fp_on():
            for h in hints:
                if h.epoch == epoch:
                    self.fp_installs += 1
                    fp.install(family=h.family, action=h.action, in_ifindex=h.in_ifindex,
                               out_ifindex=h.out_ifindex, src=h.src, dst=h.dst, eth=h.eth,
                               in_mac=h.in_mac, mtu=h.mtu, hop_limit=h.hop_limit)
        else:
            fp.clear()
        hints.clear()

    def fold_fastpath(self) -> None:
        """Add what the fast path did since the last fold to core's counters."""
        fp = self.fastpath
        if fp is None:
            return
        rx: dict[int, tuple[int, int]] = {}
        tx: dict[int, tuple[int, int]] = {}
        kinds = dict.fromkeys(FOLD_COUNTERS, 0)      # C's echo4 stays 0: it punts IPv4 echo
        for ifindex, now in fp.counters().items():
            last = self._fp_folded.get(ifindex, {})
            d = {k: v - last.get(k, 0) for k, v in now.items()}
            self._fp_folded[ifindex] = dict(now)
            # frames GRO merged away were received on the link too
            rx_n = d.get("rx_packets", 0) + d.get("gro_segs", 0) + d.get("acks_merged", 0)
            if rx_n:
                rx[ifindex] = (rx_n, d.get("rx_bytes", 0) + d.get("gro_bytes", 0))
            if d.get("tx_packets"):
                tx[ifindex] = (d["tx_packets"], d["tx_bytes"])
            for k in kinds:
                kinds[k] += d.get(k, 0)
        if rx or tx or any(kinds.values()):
            self.stack.fastpath_fold(rx, tx, kinds)

    def _write(self, tx: list[tuple[int, bytes]]) -> None:
        if not tx:
            return
        if self.faults_tx:
            now = self.clock.now()
            for ifindex, frame in tx:
                inj = self.faults_tx.get(ifindex)
                if inj is None:
                    self._write_now(ifindex, self._wire_frames(ifindex, frame))
                else:
                    for piece in self._wire_frames(ifindex, frame):
                        inj.offer(piece, now)
                    self._write_now(ifindex, inj.due(now))
            return
        if self.pcap is not None:
            for ifindex, frame in tx:
                self._write_now(ifindex, self._wire_frames(ifindex, frame))
            return
        # The common case, per frame: no impairment, no capture, one write each.
        links = self.links
        for ifindex, frame in tx:
            link = links.get(ifindex)
            if link is None:
                self.tx_no_link += 1
                continue
            if isinstance(frame, GsoChain) and not isinstance(link, TapLink):
                frame = frame.join()  # only TapLink writes a chain unjoined
            try:
                link.write(frame)     # a full queue / down link is counted by the link
            except LinkGone as e:
                self._link_gone(ifindex, e)

    def _wire_frames(self, ifindex: int, frame: bytes) -> list[bytes]:
        """The frames one frame of core's becomes on the wire. With capture or tx faults
        on, a GSO (or NEEDS_CSUM) frame bound for a link without offloads is cut here,
        in Python (``TapLink.cut_in_software``), so that pcap shows the frames the kernel
        gets and faults act on each; otherwise the link cuts it in C as it writes."""
        if type(frame) is bytes:
            return [frame]
        frame = joined(frame)         # pcap and faults see whole frames
        link = self.links.get(ifindex)
        off = offload_of(frame)
        if off is None or link is None or link.offload or not hasattr(link, "cut_in_software"):
            return [frame]
        return link.cut_in_software(frame, off)

    def _write_now(self, ifindex: int, frames: list[bytes]) -> None:
        if not frames:
            return
        link = self.links.get(ifindex)
        if link is None:
            self.tx_no_link += len(frames)
            return
        pcap = self.pcap
        ts = time.time_ns() if pcap is not None else 0
        for frame in frames:
            if pcap is not None:
                pcap.write(link.name, frame, ts)
            try:
                link.write(frame)     # a full queue / down link is counted by the link
            except LinkGone as e:
                self._link_gone(ifindex, e)
                return

    def _deliver(self, events: list[object]) -> None:
        for cb in list(self._listeners):
            try:
                cb(events)
            except Exception:
                self.listener_errors += 1
                log.exception("event listener failed")

    def _forward_notes(self) -> None:
        notes = getattr(self.stack, "log", None)
        if not notes:
            return
        batch = list(notes)
        notes.clear()
        for level, message in batch:
            core_log.log(LEVELS.get(level, logging.INFO), "%s", message)

    def _next_deadline(self) -> int | None:
        at: int | None = self.stack.poll_at()
        for inj in (*self.faults_rx.values(), *self.faults_tx.values()):
            t = inj.next_at()
            if t is not None and (at is None or t < at):
                at = t
        return at

    def _reschedule(self) -> None:
        at = self._next_deadline()
        if at is None:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
                self._timer_at = None
            return
        if self._timer is not None and self._timer_at == at:
            return
        if self._timer is not None:
            self._timer.cancel()
        delay = max(0, at - self.clock.now()) / 1e9
        if self._poll_failed:
            delay = max(delay, 0.1)
        self._timer_at = at
        self._timer = self.loop.call_later(delay, self._tick)

    # -- introspection -----------------------------------------------------------

    def counters(self) -> dict[str, int]:
        out = {"core_errors": self.core_errors, "listener_errors": self.listener_errors,
               "tx_no_link": self.tx_no_link, "links_gone": len(self.gone), "busy_polls": self.busy_polls}
        if self.fastpath is not None:
            out["fastpath"] = int(self._fp_on())
            out["fastpath_installs"] = self.fp_installs
            out["fastpath_clears"] = self.fp_clears
        return out

    def link_counters(self) -> dict[str, dict[str, int]]:
        out: dict[str, dict[str, int]] = {}
        fp = self.fastpath.counters() if self.fastpath is not None else {}
        for ifindex, link in [*self.links.items(), *self.gone.items()]:
            counters = link.counters()
            c = fp.get(ifindex)
            if c is not None:
                # frames the fast path read and wrote are the link's frames too
                counters["rx_frames"] += c["rx_packets"] + c["gro_segs"] + c["acks_merged"]
                counters["tx_frames"] += c["tx_packets"]
                for k, name in FASTPATH_TX_COUNTERS.items():
                    counters[name] += c[k]
                counters.update({f"fastpath_{k}": v for k, v in c.items()})
            for direction, table in (("rx", self.faults_rx), ("tx", self.faults_tx)):
                inj = table.get(ifindex)
                if inj is not None:
                    counters.update({f"faults_{direction}_{k}": v
                                     for k, v in dataclasses.asdict(inj.counters).items()})
            out[link.name] = counters
        return out
