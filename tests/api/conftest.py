"""Helpers for the api tests: two TAP-less stacks on one in-memory wire.

Most tests run on ``VirtualTimeLoop`` (``run_virtual``): DAD, TCP timers and
timeouts take no wall time, and nothing sleeps; a test that waits for an event that
never comes ends at its virtual timeout. Tests that talk to real host sockets use
``asyncio.run`` instead.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import replace

from stack.api.facade import Stack
from stack.control.config import parse_config

A_TOML = """
name = "a"
[loopback]
addresses = ["2001:db8:ff::1/128", "198.51.100.1/32"]
[[interface]]
name = "tap0"
mac = "02:00:00:00:00:0a"
addresses = ["2001:db8:1::2/64", "192.0.2.2/24"]
[services]
echo = 7
discard = 9
daytime = 13
chargen = 19
"""

B_TOML = """
name = "b"
[[interface]]
name = "tap0"
mac = "02:00:00:00:00:0b"
addresses = ["2001:db8:1::1/64", "192.0.2.1/24"]
"""

A_GA, A_V4, A_LO6, A_LO4 = "2001:db8:1::2", "192.0.2.2", "2001:db8:ff::1", "198.51.100.1"
B_GA, B_V4 = "2001:db8:1::1", "192.0.2.1"
A_LL = "fe80::ff:fe00:a"        # from MAC 02:00:00:00:00:0a
B_LL = "fe80::ff:fe00:b"


@contextlib.asynccontextmanager
async def pair(a_toml: str = A_TOML, b_toml: str = B_TOML, *, loss: float = 0.0,
               forwards: tuple = ()) -> AsyncIterator[tuple[Stack, Stack]]:
    """Stack A (services on) and stack B wired tap0 <-> tap0, both running."""
    cfg = parse_config(a_toml, "a.toml")
    if forwards:
        cfg = replace(cfg, forwards=forwards)
    a = Stack.for_testing(cfg, seed=1)
    b = Stack.for_testing(b_toml, seed=2)
    Stack.wire(a, b, loss=loss, seed=3)
    async with a, b:
        yield a, b


def virtual(fn):  # type: ignore[no-untyped-def]
    """Run an async test on a fresh VirtualTimeLoop (60 virtual seconds at most)."""
    import functools

    from stack.api.testing import run_virtual

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):  # type: ignore[no-untyped-def]
        return run_virtual(lambda: fn(*args, **kwargs), timeout=600)
    return wrapper
