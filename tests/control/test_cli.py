"""Command-line parsing: options anywhere, word grammars, errors without tracebacks."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from stack.control.cli import UsageError, build_parser, main, request_for


def parse(*argv: str) -> tuple[str, dict[str, object], str | None, bool]:
    ns = build_parser().parse_args(list(argv))
    cmd, args = request_for(ns)
    return cmd, args, ns.name, ns.json


def test_name_and_json_before_and_after_the_subcommand() -> None:
    assert parse("-j", "--name", "lab", "neigh") == ("neigh", {}, "lab", True)
    assert parse("neigh", "--name", "lab", "-j") == ("neigh", {}, "lab", True)
    assert parse("--name", "a", "neigh", "--name", "b") == ("neigh", {}, "b", False)
    assert parse("addr") == ("addr", {}, None, False)


@pytest.mark.parametrize("argv, expected", [
    (["route"], ("route", {})),
    (["route", "show"], ("route", {})),
    (["route", "get", "2001:db8::1"], ("route_get", {"dst": "2001:db8::1"})),
    (["route", "get", "2001:db8::1", "from", "2001:db8:1::2", "-j"],
     ("route_get", {"dst": "2001:db8::1", "from": "2001:db8:1::2"})),
    (["route", "add", "203.0.113.0/24", "via", "fe80::2%tap1", "src", "198.51.100.1"],
     ("route_add", {"prefix": "203.0.113.0/24", "via": "fe80::2%tap1", "src": "198.51.100.1"})),
    (["route", "add", "2001:db8:5::/48", "dev", "tap0", "metric", "5"],
     ("route_add", {"prefix": "2001:db8:5::/48", "dev": "tap0", "metric": 5})),
    (["route", "del", "203.0.113.0/24"], ("route_del", {"prefix": "203.0.113.0/24"})),
    (["neigh", "flush"], ("neigh_flush", {})),
    (["neigh", "flush", "dev", "tap0"], ("neigh_flush", {"dev": "tap0"})),
    (["trace", "-c", "3"], ("trace", {"count": 3})),
    (["ping", "-c", "3", "-i", "0.2", "-s", "100", "-W", "2", "-I", "2001:db8:1::2", "2001:db8:1::1"],
     ("ping", {"dst": "2001:db8:1::1", "count": 3, "interval": 0.2, "size": 100, "timeout": 2.0,
               "source": "2001:db8:1::2"})),
    (["connect", "-u", "-w", "5", "-s", "192.0.2.2", "192.0.2.1", "7"],
     ("connect", {"dst": "192.0.2.1", "port": 7, "udp": True, "source": "192.0.2.2", "wait": 5.0})),
])
def test_requests(argv: list[str], expected: tuple[str, dict[str, object]]) -> None:
    assert parse(*argv)[:2] == expected


@pytest.mark.parametrize("argv, message", [
    (["route", "get"], "needs a destination"),
    (["route", "get", "x", "to", "y"], "unexpected 'to'"),
    (["route", "add", "2001:db8::/32"], "needs 'via GW' or 'dev IF'"),
    (["route", "add", "2001:db8::/32", "via"], "needs a value"),
    (["route", "add", "2001:db8::/32", "via", "a", "via", "b"], "given twice"),
    (["route", "add", "2001:db8::/32", "dev", "t", "metric", "x"], "not a number"),
    (["route", "del"], "one prefix"),
    (["route", "frobnicate"], "unknown route command"),
    (["neigh", "flush", "tap0"], "unexpected 'tap0'"),
    (["neigh", "zap"], "unknown neigh command"),
    (["trace", "-c", "0"], "positive"),
    (["ping", "-c", "0", "x"], "positive"),
    (["ping", "-i", "0", "x"], "-i"),
    (["ping", "-s", "70000", "x"], "-s"),
    (["connect", "x", "70000"], "out of range"),
    (["connect", "-w", "0", "x", "1"], "-w"),
])
def test_usage_errors(argv: list[str], message: str) -> None:
    ns = build_parser().parse_args(argv)
    with pytest.raises(UsageError, match=message):
        request_for(ns)


def test_usage_error_exits_2_with_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["route", "add", "2001:db8::/32"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("tapstack: ") and err.count("\n") == 1


def test_argparse_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["ping"]) == 2
    assert main(["nosuchcommand"]) == 2
    assert main([]) == 2


def test_not_running(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("TAPSTACK_RUN_DIR", str(tmp_path))
    assert main(["--name", "x", "addr"]) == 2
    assert capsys.readouterr().err == f"tapstack: no stack named 'x' is running (no {tmp_path}/x.sock)\n"


def test_every_subcommand_has_help_with_examples() -> None:
    parser = build_parser()
    for cmd in ("run", "addr", "route", "neigh", "stats", "sockets", "trace", "ping", "connect"):
        with pytest.raises(SystemExit) as e:
            parser.parse_args([cmd, "--help"])
        assert e.value.code == 0
    text = parser.format_help()
    assert "examples:" in text


def test_bad_config_exits_2_naming_file_and_key(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[[interface]]\nname = "tsk0"\naddresses = ["2001:db8::1/64", "x"]\n')
    r = subprocess.run([sys.executable, "-m", "stack", "run", "-c", str(bad)], capture_output=True, text=True,
                       timeout=30)
    assert r.returncode == 2
    assert r.stderr == f"tapstack: config error: {bad}: interface[0].addresses[1]: 'x' is not an IP prefix\n"
    assert r.stdout == ""
    assert not Path("/sys/class/net/tsk0").exists()
