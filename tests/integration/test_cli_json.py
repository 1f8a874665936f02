"""Every `tapstack` subcommand with -j against a running daemon: the JSON parses and has the
fields and types README.md's "JSON output" table documents. And every subcommand's --help
carries examples."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest

from stack.control.cli import build_parser
from stack.core.stats import Drop
from tests.integration.conftest import ONE_TAP, REPO, STACK_LL, Factory, StackProcess

SUBCOMMANDS = ("run", "addr", "route", "neigh", "stats", "sockets", "trace", "ping", "connect")

WITH_ECHO = ONE_TAP + """
[services]
echo = 7
"""

STR_OR_NONE = (str, type(None))


def fields(obj: dict[str, Any], spec: dict[str, type | tuple[type, ...]], what: str) -> None:
    for key, typ in spec.items():
        assert key in obj, f"{what}: missing {key!r} in {obj}"
        assert isinstance(obj[key], typ), f"{what}: {key}={obj[key]!r} is not {typ}"


def j(sp: StackProcess, *args: str) -> Any:
    return json.loads(sp.tapstack(*args, "-j").stdout)


def jlines(sp: StackProcess, *args: str) -> list[dict[str, Any]]:
    out = sp.tapstack(*args, "-j").stdout.splitlines()
    assert out, f"tapstack {' '.join(args)} -j printed nothing"
    return [json.loads(line) for line in out]


@pytest.mark.netns
def test_every_subcommand_json(tapstack_factory: Factory) -> None:
    sp = tapstack_factory(WITH_ECHO)
    sp.run_in_ns(["ping", "-6", "-c", "1", "-W", "2", "2001:db8:1::2"])
    tap = sp["tap0"]

    addr = j(sp, "addr")
    assert isinstance(addr, list) and {i["ifname"] for i in addr} == {"lo", tap}
    for iface in addr:
        fields(iface, {"ifname": str, "ifindex": int, "mac": str, "mtu": int, "addresses": list}, "addr")
        for a in iface["addresses"]:
            fields(a, {"address": str, "prefixlen": int, "scope": str, "state": str}, "addr.addresses")
            assert a["state"] in ("tentative", "duplicated", "preferred", "deprecated", "optimistic")
    assert any(a["address"] == STACK_LL and a["scope"] == "link"
               for i in addr if i["ifname"] == tap for a in i["addresses"])

    route_spec: dict[str, type | tuple[type, ...]] = {
        "dst": str, "gateway": STR_OR_NONE, "dev": str, "src": STR_OR_NONE, "origdev": str, "gen": int, "proto": str}
    table = j(sp, "route")
    assert isinstance(table, list) and table
    for r in table:
        fields(r, route_spec, "route")
    assert any(r["dst"] == "2001:db8:1::/64" and r["dev"] == tap and r["proto"] == "kernel" for r in table)

    assert j(sp, "route", "add", "203.0.113.0/24", "via", "2001:db8:1::1") == {"added": "203.0.113.0/24"}
    got = j(sp, "route", "get", "203.0.113.9")
    fields(got, route_spec, "route get")
    assert (got["dst"], got["dev"], got["gateway"], got["src"]) == ("203.0.113.9", tap, "2001:db8:1::1",
                                                                   "192.0.2.2")
    assert any(r["dst"] == "203.0.113.0/24" and r["proto"] == "static" for r in j(sp, "route"))
    assert j(sp, "route", "del", "203.0.113.0/24") == {"deleted": 1}

    neigh = j(sp, "neigh")
    assert isinstance(neigh, list) and neigh
    for n in neigh:
        fields(n, {"dst": str, "dev": str, "lladdr": STR_OR_NONE, "state": str, "router": bool}, "neigh")
        assert n["state"] in ("INCOMPLETE", "REACHABLE", "STALE", "DELAY", "PROBE", "FAILED", "PERMANENT")
    assert any(n["dst"] == "2001:db8:1::1" and n["dev"] == tap for n in neigh)

    stats = j(sp, "stats")
    assert isinstance(stats, dict)
    for section, counters in stats.items():
        assert isinstance(counters, dict), section
        if section != "interfaces":
            assert all(isinstance(k, str) and isinstance(v, int) for k, v in counters.items()), section
    assert set(stats["drops"]) >= {d.value for d in Drop}          # every reason, zeros included
    assert stats["ipv6"]["in_receives"] > 0 and stats["icmp6"]["out_echo_replies"] >= 1
    for ifname in ("lo", tap):
        fields(stats["interfaces"][ifname], {"rx_packets": int, "rx_bytes": int, "tx_packets": int,
                                             "tx_bytes": int, "rx_dropped": int}, f"stats.interfaces.{ifname}")
    assert stats["interfaces"][tap]["rx_bytes"] > 0 and stats["interfaces"][tap]["link_rx_frames"] > 0
    text = sp.tapstack("stats").stdout
    assert f"interface {tap}:" in text and "rx_bytes" in text and "drops:" in text

    socks = j(sp, "sockets")
    for s in socks:
        fields(s, {"proto": str, "state": str, "local": str, "remote": str, "recv_q": int, "send_q": int}, "sockets")
    assert any(s["proto"].startswith("tcp") and s["state"] == "LISTEN" and s["local"].endswith(":7") for s in socks)

    # Streams: one object per line, parsed fields next to the text, {"exit": n} last.
    sp.run_in_ns(["ping", "-6", "-c", "1", "-W", "2", "2001:db8:1::2"], check=False)    # something to trace
    trace = subprocess.Popen([sys.executable, "-m", "stack", "trace", "-c", "2", "-j", "--name", sp.name],
                             stdout=subprocess.PIPE, text=True, cwd=REPO)
    try:
        # trace only sees what happens while it listens: keep pinging until it has its lines
        for _ in range(20):
            if trace.poll() is not None:
                break
            sp.run_in_ns(["ping", "-6", "-c", "1", "-W", "1", "2001:db8:1::2"], check=False)
        out, _ = trace.communicate(timeout=10)
    finally:
        if trace.poll() is None:
            trace.kill()
            trace.wait()
    lines = [json.loads(x) for x in out.splitlines()]
    assert lines[-1] == {"exit": 0} and len(lines) == 3, lines
    for obj in lines[:-1]:
        fields(obj, {"line": str, "probe": str}, "trace")
        assert obj["line"].startswith(obj["probe"])

    ping = jlines(sp, "ping", "-c", "2", "-i", "0.2", "-W", "2", "2001:db8:1::1")
    assert ping[-1] == {"exit": 0}
    replies = [o for o in ping if "icmp_seq" in o]
    assert [r["icmp_seq"] for r in replies] == [1, 2]
    for r in replies:
        fields(r, {"line": str, "bytes": int, "from": str, "icmp_seq": int, "ttl": int, "time_ms": float}, "ping")
    summary = next(o for o in ping if "transmitted" in o)
    assert (summary["transmitted"], summary["received"], summary["loss_pct"]) == (2, 2, 0)
    assert any("rtt_avg_ms" in o for o in ping)
    failed = sp.tapstack("ping", "-c", "1", "-W", "1", "2001:db8:1::77", "-j", check=False)
    assert failed.returncode == 1 and json.loads(failed.stdout.splitlines()[-1]) == {"exit": 1}

    flushed = j(sp, "neigh", "flush", "dev", tap)
    fields(flushed, {"flushed": int}, "neigh flush dev")
    assert flushed["flushed"] >= 1                            # 2001:db8:1::1 answered the pings
    fields(j(sp, "neigh", "flush"), {"flushed": int}, "neigh flush")

    # connect is a byte pipe: -j is accepted and the bytes pass unchanged.
    r = sp.tapstack("connect", "-w", "5", "2001:db8:1::2", "7", "-j", input="hi\n")
    assert r.stdout == "hi\n"


def test_every_subcommand_help_has_examples(capsys: pytest.CaptureFixture[str]) -> None:
    parser = build_parser()
    for cmd in SUBCOMMANDS:
        with pytest.raises(SystemExit) as e:
            parser.parse_args([cmd, "--help"])
        assert e.value.code == 0
        text = capsys.readouterr().out
        assert "examples:" in text, cmd
        examples = text.split("examples:", 1)[1].splitlines()
        assert any(line.strip().startswith(("tapstack", "sudo tapstack", "echo hi | tapstack"))
                   and f" {cmd}" in line for line in examples), f"{cmd}: no example of `tapstack {cmd}`:\n{text}"
        assert "--name" in text and "-j" in text, cmd
