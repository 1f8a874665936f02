"""Bounded, seeded fuzzing of Stack.receive and Stack.poll (the long run is scripts/fuzz.py).

Each test drives ``CASES`` mutants from ``mutate.Mutator`` through a ``Target``
(one_stack() plus neighbors, UDP/TCP endpoints and pings, rebuilt every
``SESSION`` cases) and fails on the oracle's verdict: an exception escaping the
core, a drop that no counter records, a bound exceeded, a malformed frame sent,
or a poll deadline in the past. A failure message carries the case as a
regression file body (see ``test_regressions.py``). The suite runs this under
both wire backends (default native, ``TAPSTACK_PURE=1``).
"""

from __future__ import annotations

import hashlib
import random

import pytest

from tests.fuzz import mutate
from tests.fuzz.target import Target, write_case

SEEDS = range(6)
CASES = 8_000            # x 6 seeds = 48 000 cases per backend (about 10 s)
SESSION = 50


def _run(seed: int, cases: int, strategy: str | None = None) -> Target:
    target = Target()
    mutator = mutate.Mutator(random.Random(seed), mutate.corpus(target.info()))
    pick = getattr(mutator, strategy) if strategy else mutator.case
    session: list[mutate.Step] = []
    for i in range(cases):
        if i % SESSION == 0:
            target.rebuild()
            session = []
        case = pick()
        try:
            target.run(case)
        except Exception as e:
            body = write_case(session + case, f"seed {seed} case {i}: {type(e).__name__}: {e}"[:500])
            raise AssertionError(f"fuzz failure (seed {seed}, case {i}); regression file:\n{body}") from e
        session.extend(case)
    return target


@pytest.mark.parametrize("seed", SEEDS)
def test_receive_path_survives_mutants(seed: int) -> None:
    _run(seed, CASES)


@pytest.mark.parametrize("strategy", ["ext_chain", "fragments6", "fragments4", "random_after_eth",
                                      "random_upper", "nd_zero_option", "splice", "sequence"])
def test_each_structural_strategy(strategy: str) -> None:
    _run(100 + len(strategy), 400, strategy)


def test_every_seed_is_handled_and_accounted_for() -> None:
    target = Target()
    for name, frames in mutate.corpus(target.info()):
        target.rebuild()
        try:
            target.run(list(frames))
        except Exception as e:
            raise AssertionError(f"seed {name}: {e}") from e


def test_mutator_is_deterministic() -> None:
    seeds = mutate.corpus(Target().info())

    def digest(seed: int) -> str:
        mu = mutate.Mutator(random.Random(seed), seeds)
        h = hashlib.sha256()
        for _ in range(300):
            for step in mu.case():
                h.update(step if isinstance(step, bytes) else str(step).encode())
        return h.hexdigest()

    assert digest(5) == digest(5)
    assert digest(5) != digest(6)


def test_thirty_extension_headers_are_refused_and_counted() -> None:
    target = Target()
    mu = mutate.Mutator(random.Random(30), mutate.corpus(target.info()))
    frame = mutate.fixup(mu._ipv6_frame())
    hdrs = b"".join(bytes((60, 0, 1, 4, 0, 0, 0, 0)) for _ in range(29)) + bytes((frame[20], 0, 1, 4, 0, 0, 0, 0))
    buf = bytearray(frame[:54]) + hdrs + frame[54:]
    buf[20] = 60
    target.feed(mutate.fix_lengths(bytes(buf)))
    assert target.st.stats["parse_ipv6_ext_too_many"] == 1
