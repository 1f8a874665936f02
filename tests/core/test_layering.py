"""wire and core stay deterministic: no clocks, I/O, threads or global randomness."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2] / "stack"
FORBIDDEN = {"time", "os", "socket", "asyncio", "threading", "uvloop", "pyroute2", "select", "signal"}
RANDOM_FUNCS = {"random", "randint", "randrange", "choice", "shuffle", "getrandbits", "uniform", "seed"}
# checksum.py reads TAPSTACK_PURE once at import to pick the backend (documented exception).
ALLOWED = {("wire/checksum.py", "os")}


def modules() -> list[Path]:
    return sorted([*ROOT.joinpath("wire").rglob("*.py"), *ROOT.joinpath("core").rglob("*.py")])


@pytest.mark.parametrize("path", modules(), ids=lambda p: str(p.relative_to(ROOT)))
def test_no_io_clock_or_global_random(path: Path) -> None:
    rel = str(path.relative_to(ROOT))
    tree = ast.parse(path.read_text(), str(path))
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name.split(".")[0] for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module.split(".")[0]]
            if node.module == "random":
                bad = [a.name for a in node.names if a.name in RANDOM_FUNCS]
                assert not bad, f"{rel}: imports module-level random functions {bad}"
        for n in names:
            assert n not in FORBIDDEN or (rel, n) in ALLOWED, f"{rel}: imports {n}"
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) \
                and node.value.id == "random" and node.attr in RANDOM_FUNCS:
            raise AssertionError(f"{rel}:{node.lineno}: uses random.{node.attr}() (inject a Random)")
