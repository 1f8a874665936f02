"""TCP over the loopback shortcut: lo's MTU is 65536, but no IP packet may exceed what
its header can describe (IPv4 Total Length 65535, RFC 791; IPv6 Payload Length 65535,
RFC 8200 §3). Path MTU and the MSS stop there; 200 KB echo through each family intact."""

from __future__ import annotations

import contextlib

import pytest
from harness import GA_A, one_stack

from stack.core.clock import ManualClock, ms
from stack.core.stack import MAX_PACKET4, MAX_PACKET6, Stack
from stack.core.tcp.connection import TcpConnection
from stack.core.tcp.tcb import TcpState
from stack.wire.addr import ip4, ip6
from stack.wire.frame import parse_frame

LO4 = ip4("198.51.100.1")


def loop_stack() -> tuple[Stack, ManualClock, list[bytes]]:
    st, clock = one_stack()
    st.add_address(1, LO4, 32, clock.now())
    looped: list[bytes] = []
    st.loop_tap = looped.append
    return st, clock, looped


def echo_through_loopback(st: Stack, clock: ManualClock, dst: bytes, data: bytes) -> bytes:
    """Client -> listener on port 7 -> echoed back; returns what the client read."""
    listener = st.tcp.listen(None, 7)
    client: TcpConnection = st.tcp.connect(dst, 7, now=clock.now())
    server: TcpConnection | None = None
    sent, got, backlog = 0, bytearray(), bytearray()
    for _ in range(20_000):
        now = clock.now()
        if client.state is TcpState.ESTABLISHED and sent < len(data):
            sent += client.send(memoryview(data)[sent:sent + 65536], now)
            if sent == len(data):
                client.shutdown_write(now)
        if server is None:
            server = listener.accept()
        if server is not None:
            try:
                chunk = server.recv(1 << 20, now)
                backlog += chunk
                if not chunk and not backlog and server.state is TcpState.CLOSE_WAIT:
                    server.close(now)
            except BlockingIOError:
                pass
            if backlog:
                del backlog[:server.send(bytes(backlog), now)]
        with contextlib.suppress(BlockingIOError):
            got += client.recv(1 << 20, now)
        if len(got) == len(data) and client.at_eof:
            break
        clock.advance(ms(1))
        st.poll(clock.now())
    return bytes(got)


@pytest.mark.parametrize(("dst", "cap", "header"), [(LO4, MAX_PACKET4, 20), (ip4("127.0.0.1"), MAX_PACKET4, 20),
                                                   (GA_A, MAX_PACKET6, 40), (ip6("::1"), MAX_PACKET6, 40)],
                         ids=["198.51.100.1", "127.0.0.1", "2001:db8:1::2", "::1"])
def test_path_mtu_and_mss_over_lo_fit_the_ip_header(dst: bytes, cap: int, header: int) -> None:
    st, clock, looped = loop_stack()
    route = st.route_output(dst, 0, None, clock.now())
    assert route.local and route.ifp == 1
    assert st.interfaces[1].mtu == 65536 and route.mtu == min(65536, cap)
    data = bytes(range(256)) * 800                                    # 200 KB
    assert echo_through_loopback(st, clock, dst, data) == data
    sizes = [len(parse_frame(f).ip_packet()) for f in looped]
    assert max(sizes) <= 65535 + (header - 20)                        # nothing over the field's limit
    syn = parse_frame(looped[0])
    assert syn.proto == 6 and syn.buf[syn.l4_off + 13] & 0x02         # the SYN ...
    opts = syn.buf[syn.l4_off + 20:syn.l4_off + 24]                     # ... MSS option first
    assert opts[:2] == b"\x02\x04" and int.from_bytes(opts[2:], "big") == route.mtu - header - 20
    assert max(sizes) > 60_000                                        # big segments really were used
    assert dict(st.stats.drops) == {}


def test_ipv4_cap_holds_for_any_link_mtu() -> None:
    st, clock, _ = loop_stack()
    assert st.path_mtu(LO4, 65536, clock.now()) == 65535
    assert st.path_mtu(ip6("::1"), 65536, clock.now()) == 65536      # 65496 payload: fits
    assert st.path_mtu(ip6("::1"), 70000, clock.now()) == 65575
    assert st.path_mtu(LO4, 1500, clock.now()) == 1500
