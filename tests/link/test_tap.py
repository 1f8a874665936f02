"""TapLink against the real kernel (skipped without root and /dev/net/tun)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from stack.link.tap import LinkGone, TapError, TapLink, random_mac

needs_tun = pytest.mark.skipif(os.geteuid() != 0 or not os.path.exists("/dev/net/tun"),
                               reason="needs root and /dev/net/tun")


def _name(tag: str) -> str:
    return f"tsk{os.getpid() % 100000}{tag}"[:15]


@needs_tun
def test_create_read_write_close() -> None:
    name = _name("a")
    tap = TapLink(name)
    try:
        assert Path(f"/sys/class/net/{name}").exists()
        assert tap.read_batch(8) == []               # nonblocking, nothing queued (link down)
        frame = bytes.fromhex("ffffffffffff020000000001" "88b5") + b"x" * 50
        assert tap.write(frame) in (True, False)     # down link may drop, never raises
    finally:
        tap.close()
    assert not Path(f"/sys/class/net/{name}").exists()   # non-persistent: gone with the fd
    tap.close()                                            # idempotent


@needs_tun
def test_existing_name_is_refused() -> None:
    name = _name("b")
    with TapLink(name), pytest.raises(TapError, match="already exists"):
        TapLink(name)


@needs_tun
def test_closed_fd_reports_link_gone() -> None:
    tap = TapLink(_name("c"))
    os.close(tap.fileno())
    with pytest.raises(LinkGone):
        tap.read_batch(1)
    tap.closed = True


def test_bad_name_and_missing_device() -> None:
    with pytest.raises(TapError):
        TapLink("x" * 16)
    with pytest.raises(TapError, match="does not exist"):
        TapLink("t0", device="/nonexistent/tun")


def test_random_mac_is_local_unicast() -> None:
    m = random_mac(b"\xff" * 6)
    assert m[0] & 0x03 == 0x02 and len(m) == 6


@needs_tun
def test_deleted_device_reports_link_gone() -> None:
    from pyroute2 import IPRoute

    name = _name("d")
    tap = TapLink(name)
    try:
        with IPRoute() as ipr:
            ipr.link("del", index=ipr.link_lookup(ifname=name)[0])
        with pytest.raises(LinkGone):
            tap.read_batch(1)
        with pytest.raises(LinkGone):
            tap.write(b"\x00" * 60)
    finally:
        tap.close()
