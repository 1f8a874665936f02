"""RouteTable on its own: longest-prefix match per zone and the cached next expiry."""

from __future__ import annotations

from stack.core.routes import Route, RouteTable
from stack.wire.addr import ip4, ip6, mask_prefix


def test_longest_prefix_wins_in_its_zone_and_expired_routes_are_skipped() -> None:
    t = RouteTable()
    t.add(Route(ip6("2001:db8::"), 32, 2, 2))
    t.add(Route(ip6("2001:db8:1::"), 64, 3, 3))
    t.add(Route(ip6("2001:db8:1::"), 64, 4, 4, zone=4, expires_at=100))
    t.add(Route(ip4("192.0.2.0"), 24, 5, 5))
    hit = t.lookup(ip6("2001:db8:1::9"))
    assert hit is not None and hit.ifindex == 3
    hit = t.lookup(ip6("2001:db8:2::9"))
    assert hit is not None and hit.ifindex == 2
    zoned = t.lookup(ip6("2001:db8:1::9"), 4, now=50)
    assert zoned is not None and zoned.ifindex == 4
    assert t.lookup(ip6("2001:db8:1::9"), 4, now=100) is None        # expired, nothing else in zone 4
    hit4 = t.lookup(ip4("192.0.2.77"))
    assert hit4 is not None and hit4.ifindex == 5
    assert t.lookup(ip4("198.51.100.1")) is None
    assert mask_prefix(ip6("2001:db8:1:2:3:4:5:6"), 0) == bytes(16)
    assert mask_prefix(ip4("192.0.2.255"), 25) == ip4("192.0.2.128")


def test_next_expiry_follows_every_change_of_the_table() -> None:
    t = RouteTable()
    assert t.next_expiry() is None
    t.add(Route(ip6("2001:db8:1::"), 64, 2, 2, expires_at=500))
    assert t.next_expiry() == 500
    t.add(Route(ip6("2001:db8:2::"), 64, 2, 2, expires_at=300))
    assert t.next_expiry() == 300
    t.remove(ip6("2001:db8:2::"), 64)
    assert t.next_expiry() == 500
    t.add(Route(ip6("2001:db8:1::"), 64, 2, 2, expires_at=900))      # replaces (same slot)
    assert t.next_expiry() == 900
    assert [r.expires_at for r in t.expire(900)] == [900]
    assert t.next_expiry() is None


def test_memoized_lookups_follow_changes_and_expiry_without_a_poll() -> None:
    t = RouteTable()
    t.add(Route(ip6("2001:db8::"), 32, 2, 2))
    t.add(Route(ip6("2001:db8:1::"), 64, 3, 3, expires_at=1000))
    dst = ip6("2001:db8:1::9")
    for now in (10, 20, 999):                               # memoized answers, still right
        hit = t.lookup(dst, 0, now)
        assert hit is not None and hit.ifindex == 3
    assert t.stable_until(999) == 1000
    hit = t.lookup(dst, 0, 1000)                            # expired: not in the answer, no expire()
    assert hit is not None and hit.ifindex == 2
    assert t.stable_until(1000) is None                     # nothing else expires
    t.add(Route(ip6("2001:db8:1::"), 48, 4, 4))             # a change: the next lookup sees it
    hit = t.lookup(dst, 0, 1001)
    assert hit is not None and hit.ifindex == 4
    t.remove(ip6("2001:db8:1::"), 48)
    hit = t.lookup(dst, 0, 1002)
    assert hit is not None and hit.ifindex == 2


def test_memo_is_bounded_and_stays_correct_when_full() -> None:
    from stack.core.routes import MEMO_MAX
    t = RouteTable()
    t.add(Route(ip6("2001:db8::"), 32, 2, 2))
    t.add(Route(ip6("2001:db8:7::"), 48, 3, 3))
    for i in range(MEMO_MAX * 2 + 5):
        dst = ip6(f"2001:db8:{7 if i % 2 else 8}::{i:x}")
        hit = t.lookup(dst, 0, 5)
        assert hit is not None and hit.ifindex == (3 if i % 2 else 2)
        assert len(t._memo) <= MEMO_MAX
