"""Stack.ping: to itself (loopback shortcut, link-local and global), to the peer, errors."""

from __future__ import annotations

import errno

import pytest

from tests.api.conftest import A_GA, A_LL, A_LO4, A_LO6, A_TOML, A_V4, B_GA, B_LL, B_V4, pair, virtual

A_WITH_SILENT_NEIGHBOR = A_TOML.replace('addresses = ["2001:db8:1::2/64", "192.0.2.2/24"]', '''addresses = ["2001:db8:1::2/64", "192.0.2.2/24"]
neighbors = [{ address = "2001:db8:1::77", mac = "02:00:00:00:00:77" }]''')


@virtual
async def test_ping_self_every_address() -> None:
    async with pair() as (a, _b):
        for dst in (A_GA, f"{A_LL}%tap0", A_LL, "::1", "127.0.0.1", A_LO6, A_LO4, A_V4):
            rtt = await a.ping(dst, timeout=1)
            assert rtt >= 0.0, dst
        assert a.core.stats.snapshot()["icmp6"]["out_echo_replies"] >= 5


@virtual
async def test_ping_peer_and_sizes() -> None:
    async with pair() as (a, b):
        assert await a.ping(B_GA) >= 0
        assert await a.ping(B_V4) >= 0
        assert await a.ping(f"{B_LL}%tap0", size=1400) >= 0
        assert await b.ping(A_GA, size=3000) >= 0            # fragmented both ways
        assert await b.ping(A_V4, size=0) >= 0
        assert await a.ping(B_GA, source=A_GA) >= 0
        assert await a.ping(f"{B_LL}%tap0", source=f"{A_LL}%tap0") >= 0


@virtual
async def test_ping_on_link_address_nobody_has_is_address_unreachable() -> None:
    async with pair() as (a, _b):
        with pytest.raises(OSError) as e:
            await a.ping("2001:db8:1::99", timeout=10)
        assert e.value.errno == errno.EHOSTUNREACH
        assert "Address unreachable" in e.value.strerror


@virtual
async def test_ping_without_route_and_without_reply() -> None:
    async with pair(A_WITH_SILENT_NEIGHBOR) as (a, _b):
        with pytest.raises(OSError) as e:
            await a.ping("2001:db8:77::1")
        assert e.value.errno == errno.ENETUNREACH
        with pytest.raises(TimeoutError) as t:
            await a.ping("2001:db8:1::77", timeout=2)       # resolved, never answers
        assert t.value.errno == errno.ETIMEDOUT
        with pytest.raises(OSError) as e:
            await a.ping(B_GA, source="2001:db8:1::1")     # not our address
        assert e.value.errno == errno.EADDRNOTAVAIL
