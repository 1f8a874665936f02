"""The fault-injecting link: seeded, counted, and each impairment does what it says."""

from __future__ import annotations

import pytest

from stack.link.faults import FaultConfig, FaultInjector

MS = 1_000_000


def frame(i: int) -> bytes:
    return bytes(14) + i.to_bytes(4, "big") + bytes(46)


def run(cfg: FaultConfig, n: int = 2000, step: int = MS) -> tuple[FaultInjector, list[bytes]]:
    fi = FaultInjector(cfg)
    out: list[bytes] = []
    now = 0
    for i in range(n):
        fi.offer(frame(i), now)
        out += fi.due(now)
        now += step
    out += fi.due(now + 10_000 * MS)
    return fi, out


def test_no_faults_passes_everything_in_order() -> None:
    fi, out = run(FaultConfig())
    assert out == [frame(i) for i in range(2000)] and fi.counters.lost == 0


def test_loss_rate_is_close_to_configured_and_seeded() -> None:
    fi, out = run(FaultConfig(loss=0.05, seed=3))
    assert 60 <= fi.counters.lost <= 140 and len(out) == 2000 - fi.counters.lost
    _fi2, out2 = run(FaultConfig(loss=0.05, seed=3))
    assert out2 == out


def test_reorder_lets_later_frames_overtake() -> None:
    fi, out = run(FaultConfig(reorder=0.1, reorder_ms=5, seed=2))
    order = [int.from_bytes(f[14:18], "big") for f in out]
    assert sorted(order) == list(range(2000))
    assert order != sorted(order) and fi.counters.reordered > 100


def test_duplicate_adds_copies() -> None:
    fi, out = run(FaultConfig(duplicate=0.1, seed=4))
    assert len(out) == 2000 + fi.counters.duplicated and fi.counters.duplicated > 100


def test_corrupt_flips_exactly_one_bit_after_the_ethernet_header() -> None:
    _fi, out = run(FaultConfig(corrupt=1.0, seed=5), n=200)
    for i, f in enumerate(out):
        orig = frame(i)
        assert f[:14] == orig[:14]
        diff = sum(bin(a ^ b).count("1") for a, b in zip(f, orig, strict=False))
        assert diff == 1


def test_delay_holds_frames_until_due() -> None:
    fi = FaultInjector(FaultConfig(delay_ms=5))
    fi.offer(frame(1), 0)
    assert fi.due(4 * MS) == [] and fi.next_at() == 5 * MS
    assert fi.due(5 * MS) == [frame(1)]


def test_held_frames_are_bounded() -> None:
    fi = FaultInjector(FaultConfig(delay_ms=1000, limit=10))
    for i in range(50):
        fi.offer(frame(i), 0)
    assert len(fi) == 10 and fi.counters.overflow == 40


@pytest.mark.parametrize("bad", [FaultConfig(loss=1.5), FaultConfig(delay_ms=-1), FaultConfig(direction="up")])
def test_validation_names_the_problem(bad: FaultConfig) -> None:
    assert bad.validate()
