"""SIGHUP reload on a TAP-less core stack: route diffs, needs-restart keys, refusal before change."""

from __future__ import annotations

import random

import pytest

from stack.control.config import ConfigError, parse_config
from stack.runtime.build import build_stack
from stack.runtime.reload import needs_restart, reload_config

BASE = """
[[interface]]
name = "tap0"
addresses = ["2001:db8:1::2/64", "192.0.2.2/24"]
[[interface]]
name = "tap1"
[[route]]
to = "203.0.113.0/24"
via = "fe80::2%tap1"
[services]
echo = 7
"""


def routes(st: object) -> set[str]:
    return {r["dst"] for r in st.query("route", {}, 0) if r["proto"] == "static"}  # type: ignore[attr-defined]


def test_routes_are_diffed_and_other_changes_only_reported() -> None:
    old = parse_config(BASE, "a.toml")
    st = build_stack(old, 0, random.Random(1))
    st.add_route(bytes(16), 0, gateway=bytes.fromhex("20010db8000100000000000000000001"))  # `route add` by hand
    new = parse_config(BASE.replace('to = "203.0.113.0/24"', 'to = "198.51.100.0/24"')
                       .replace("192.0.2.2/24", "192.0.2.3/24") + "discard = 9\n", "a.toml")
    res = reload_config(old, new, st, None, 0)
    assert res.routes_deleted == ["203.0.113.0/24 via fe80::2%tap1"]
    assert res.routes_added == ["198.51.100.0/24 via fe80::2%tap1"]
    assert routes(st) == {"198.51.100.0/24", "default"}       # the hand-added default stays
    assert res.needs_restart == ["interfaces"]
    assert "192.0.2.3" not in {a["address"] for i in st.query("addr", {}, 0) for a in i["addresses"]}


def test_a_route_core_refuses_changes_nothing() -> None:
    old = parse_config(BASE, "a.toml")
    st = build_stack(old, 0, random.Random(1))
    bad = parse_config(BASE + '[[route]]\nto = "2001:db8:9::/48"\nvia = "2001:db8:77::1"\n', "b.toml")
    with pytest.raises(ConfigError, match=r"b.toml: route\[1\]: gateway 2001:db8:77::1"):
        reload_config(old, bad, st, None, 0)
    assert routes(st) == {"203.0.113.0/24"}


def test_needs_restart_ignores_live_keys_and_source_path() -> None:
    a = parse_config(BASE, "a.toml")
    b = parse_config(BASE.replace("echo = 7", "echo = 8") + "[[forward]]\nlisten = 1\nto = \"127.0.0.1:2\"\n", "b.toml")
    assert needs_restart(a, b) == []
    assert needs_restart(a, parse_config("forwarding = true\n" + BASE, "c.toml")) == ["forwarding"]
