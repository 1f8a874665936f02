#!/usr/bin/env python3
"""Long-running structure-aware fuzzer of the core receive path.

    .venv/bin/python scripts/fuzz.py --seconds 120 --seed 7 --backend native
    .venv/bin/python scripts/fuzz.py --seconds 600 --backend pure --out /tmp/fuzz
    .venv/bin/python scripts/fuzz.py --replay tests/fuzz/regressions/some.hex

Cases come from ``tests/fuzz/mutate.py`` (the mutator the test suite uses) and
run against ``tests/fuzz/target.py`` (a core Stack with neighbors, UDP and TCP
endpoints and pings; the oracle: no exception, no uncounted drop, every bound
kept, every frame sent well formed, no poll deadline in the past). The stack is
rebuilt every ``--session`` cases, so state from earlier cases is attacked too.

A progress line goes to stderr every second. On the first failure the case is
shrunk (the failing case alone on a fresh stack, then one step removed at a time
while it still fails), written as a regression file (one frame in hex per line,
``+<ns>`` for "advance the clock and poll"; what ``tests/fuzz/test_regressions.py``
replays) and the exit status is 1. ``--keep-going`` records every failure and
exits 1 at the end if there was any. Exit 0: the time ran out without a failure.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import time
import traceback
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=float, default=60.0, help="how long to run (default 60)")
    p.add_argument("--seed", type=int, default=None, help="mutator seed (default: from the clock)")
    p.add_argument("--backend", choices=("native", "pure"), default="native",
                   help="wire backend: native (cffi) or pure (TAPSTACK_PURE=1)")
    p.add_argument("--session", type=int, default=50, help="cases per stack before a rebuild")
    p.add_argument("--out", type=Path, default=Path("fuzz-out"), help="where failing cases are written")
    p.add_argument("--keep-going", action="store_true", help="record every failure, do not stop")
    p.add_argument("--strict-tcp", action="store_true",
                   help="also fail on TCP segments ignored without a counter (tolerated by default)")
    p.add_argument("--replay", type=Path, default=None, help="run one regression file and exit")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # The backend is chosen when stack.wire.checksum is first imported.
    if args.backend == "pure":
        os.environ["TAPSTACK_PURE"] = "1"
    else:
        os.environ.pop("TAPSTACK_PURE", None)
    sys.path.insert(0, str(ROOT))
    sys.path.insert(0, str(ROOT / "tests"))
    from stack.wire import checksum
    from tests.fuzz import mutate
    from tests.fuzz.target import FuzzFailure, Target, read_case, write_case

    if args.backend != checksum.BACKEND:
        print(f"fuzz: backend {args.backend} unavailable (got {checksum.BACKEND})", file=sys.stderr)
        return 2

    def fails(steps: list[mutate.Step], prefix: list[mutate.Step]) -> str | None:
        """Replay prefix (unjudged) then steps on a fresh stack; the failure, if any."""
        t = Target(strict_tcp=args.strict_tcp)
        try:
            t.run(prefix, judge=False)
        except Exception as e:   # the prefix alone fails: report that
            return f"{type(e).__name__}: {e}"
        try:
            t.run(steps)
        except FuzzFailure as e:
            return f"FuzzFailure: {str(e)[:200]}"
        except Exception as e:
            return f"{type(e).__name__}: {e}"
        return None

    if args.replay is not None:
        why = fails(read_case(args.replay.read_text()), [])
        print(why or "ok")
        return 1 if why else 0

    seed = args.seed if args.seed is not None else int(time.time())
    rng = random.Random(seed)
    target = Target(strict_tcp=args.strict_tcp)
    mutator = mutate.Mutator(rng, mutate.corpus(target.info()))
    args.out.mkdir(parents=True, exist_ok=True)
    print(f"fuzz: backend={checksum.BACKEND} seed={seed} seconds={args.seconds} out={args.out}",
          file=sys.stderr)

    start = last = time.monotonic()
    cases = frames = found = 0
    kinds: Counter[str] = Counter()
    session: list[mutate.Step] = []
    while time.monotonic() - start < args.seconds:
        if cases % args.session == 0:
            target.rebuild()
            session = []
        case = mutator.case()
        cases += 1
        frames += sum(isinstance(s, bytes) for s in case)
        try:
            target.run(case)
        except Exception as e:
            found += 1
            kind = "uncounted" if isinstance(e, FuzzFailure) and "uncounted" in str(e) else \
                "invariant" if isinstance(e, FuzzFailure) else "crash"
            kinds[kind] += 1
            detail = "".join(traceback.format_exception(e)[-6:]) if kind == "crash" else str(e)
            steps, prefix = shrink(case, session, fails)
            path = args.out / f"{kind}-{seed}-{cases}.hex"
            comment = (f"{kind} found by scripts/fuzz.py --seed {seed} --backend {checksum.BACKEND} "
                       f"(case {cases})\n{detail.strip()}")
            path.write_text(write_case(prefix + steps, comment))
            print(f"\nfuzz: {kind} after {cases} cases, written to {path}\n{detail}", file=sys.stderr)
            if not args.keep_going:
                break
            target.rebuild()
            session = []
            cases += (-cases) % args.session   # the rebuild starts a new session
            continue
        session.extend(case)
        now = time.monotonic()
        if now - last >= 1.0:
            last = now
            _progress(now - start, cases, frames, found, target.tolerated)
    elapsed = time.monotonic() - start
    _progress(elapsed, cases, frames, found, target.tolerated)
    print(f"\nfuzz: {cases} cases ({frames} frames) in {elapsed:.1f} s, {cases / elapsed:.0f} cases/s, "
          f"failures: {dict(kinds) or 0}, tolerated: {dict(target.tolerated) or 0}", file=sys.stderr)
    return 1 if found else 0


def _progress(elapsed: float, cases: int, frames: int, found: int, tolerated: Counter[str]) -> None:
    print(f"\r{elapsed:7.1f} s  {cases:9d} cases  {frames:9d} frames  {cases / max(elapsed, 1e-9):6.0f}/s  "
          f"failures {found}  tolerated {sum(tolerated.values())}", end="", file=sys.stderr, flush=True)


def shrink(case: list, session: list, fails) -> tuple[list, list]:  # type: ignore[type-arg, no-untyped-def]
    """The smallest (steps, prefix) found that still fails: the case alone on a fresh
    stack if that is enough, else the session before it as an unjudged prefix; then
    single steps removed while the failure stays."""
    if fails(case, []) is not None:
        steps, prefix = list(case), []
    elif fails(case, session) is not None:
        steps, prefix = list(case), list(session)
    else:
        return list(case), list(session)   # not reproducible: keep everything
    i = len(prefix) - 1
    while i >= 0:                          # shorten the prefix
        trial = prefix[:i] + prefix[i + 1:]
        if fails(steps, trial) is not None:
            prefix = trial
        i -= 1
    i = len(steps) - 1
    while i >= 0 and len(steps) > 1:       # and the case
        trial = steps[:i] + steps[i + 1:]
        if fails(trial, prefix) is not None:
            steps = trial
        i -= 1
    return steps, prefix


if __name__ == "__main__":
    sys.exit(main())
