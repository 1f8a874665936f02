"""Text output of the read-only commands, from the same JSON the daemon sends for ``-j``.

iproute2 / ss look: ``ip addr``-style blocks, one route or neighbor per line,
aligned columns for stats and sockets. Missing fields are left out, never invented.
"""

from __future__ import annotations

import re
from typing import Any


def _get(d: Any, key: str) -> Any:
    return d.get(key) if isinstance(d, dict) else None


def addr(data: Any) -> str:
    out: list[str] = []
    for iface in data or []:
        flags = iface.get("flags")
        flag_text = f" <{','.join(flags)}>" if isinstance(flags, list) and flags else ""
        head = f"{iface.get('ifindex', '?')}: {iface.get('ifname', '?')}:{flag_text}"
        if iface.get("mtu") is not None:
            head += f" mtu {iface['mtu']}"
        if iface.get("state"):
            head += f" state {iface['state']}"
        out.append(head)
        if iface.get("mac"):
            kind = "loopback" if iface.get("ifname") == "lo" else "ether"
            out.append(f"    link/{kind} {iface['mac']}")
        for a in iface.get("addresses") or []:
            address = str(a.get("address", "?"))
            fam = "inet6" if ":" in address else "inet"
            line = f"    {fam} {address}/{a.get('prefixlen', '?')}"
            if a.get("scope"):
                line += f" scope {a['scope']}"
            state = a.get("state")
            if state:
                line += f" {state}"
            out.append(line)
            lifetimes = []
            for key in ("valid_lft", "preferred_lft"):
                if key in a:
                    v = a[key]
                    lifetimes.append(f"{key} {'forever' if v is None else f'{v}sec'}")
            if lifetimes:
                out.append("       " + " ".join(lifetimes))
    return "\n".join(out)


def _route_line(r: dict[str, Any]) -> str:
    parts = [str(r.get("dst", "?"))]
    if r.get("gateway"):
        gw = str(r["gateway"])
        if ":" in gw and "." in str(r.get("dst", "")):
            parts += ["via", "inet6", gw]
        else:
            parts += ["via", gw]
    if r.get("dev"):
        parts += ["dev", str(r["dev"])]
    for key in ("proto", "src", "metric"):
        if r.get(key) not in (None, "") and not (key == "metric" and r.get(key) == 0):
            parts += [key, str(r[key])]
    if r.get("origdev") and r.get("origdev") != r.get("dev"):
        parts += ["origdev", str(r["origdev"])]
    return " ".join(parts)


def route(data: Any) -> str:
    return "\n".join(_route_line(r) for r in data or [])


def route_get(r: Any) -> str:
    """``DST dev IFP origdev AIFP [via GW] src SRC gen N`` (INTERFACE.md)."""
    if not isinstance(r, dict):
        return str(r)
    parts = [str(r.get("dst", "?"))]
    if r.get("dev"):
        parts += ["dev", str(r["dev"])]
    if r.get("origdev"):
        parts += ["origdev", str(r["origdev"])]
    if r.get("gateway"):
        parts += ["via", str(r["gateway"])]
    if r.get("src"):
        parts += ["src", str(r["src"])]
    if r.get("gen") is not None:
        parts += ["gen", str(r["gen"])]
    return " ".join(parts)


def neigh(data: Any) -> str:
    out = []
    for n in data or []:
        parts = [str(n.get("dst", "?"))]
        if n.get("dev"):
            parts += ["dev", str(n["dev"])]
        if n.get("lladdr"):
            parts += ["lladdr", str(n["lladdr"])]
        if n.get("router"):
            parts.append("router")
        parts.append(str(n.get("state", "?")))
        out.append(" ".join(parts))
    return "\n".join(out)


def _table(rows: list[list[str]], right: set[int] | None = None) -> list[str]:
    if not rows:
        return []
    right = right or set()
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = []
    for r in rows:
        cells = [c.rjust(widths[i]) if i in right else c.ljust(widths[i]) for i, c in enumerate(r)]
        lines.append("  ".join(cells).rstrip())
    return lines


def stats(data: Any) -> str:
    if not isinstance(data, dict):
        return str(data)
    out: list[str] = []
    ifaces = data.get("interfaces")
    for section, counters in data.items():
        if section == "interfaces" or not isinstance(counters, dict):
            continue
        out.append(f"{section}:")
        shown = {k: v for k, v in counters.items() if v} if section == "drops" else counters
        rows = [[f"    {k}", str(v)] for k, v in shown.items()]
        out += _table(rows, right={1}) if rows else ["    (none)"]
        if len(shown) < len(counters):
            out.append(f"    ({len(counters) - len(shown)} other reasons at 0; -j lists every one)")
    if isinstance(ifaces, dict):
        for ifname, counters in ifaces.items():
            out.append(f"interface {ifname}:")
            if isinstance(counters, dict):
                rows = [[f"    {k}", str(v)] for k, v in counters.items()]
                out += _table(rows, right={1})
    return "\n".join(out)


def _endpoint(text: Any) -> str:
    return "*" if text in (None, "") else str(text)


def sockets(data: Any) -> str:
    rows = [["Netid", "State", "Recv-Q", "Send-Q", "Local Address:Port", "Peer Address:Port"]]
    for s in data or []:
        rows.append([str(s.get("proto", "?")), str(s.get("state", "")), str(s.get("recv_q", 0)),
                     str(s.get("send_q", 0)), _endpoint(s.get("local")), _endpoint(s.get("remote"))])
    return "\n".join(_table(rows, right={2, 3}))


_PING_REPLY = re.compile(r"^(?P<bytes>\d+) bytes from (?P<from>\S+): icmp_seq=(?P<icmp_seq>\d+) "
                         r"ttl=(?P<ttl>\d+) time=(?P<time_ms>[\d.]+) ms")
_PING_SUMMARY = re.compile(r"^(?P<transmitted>\d+) packets transmitted, (?P<received>\d+) received"
                           r".*?(?P<loss_pct>[\d.]+)% packet loss")
_PING_RTT = re.compile(r"^rtt min/avg/max/mdev = (?P<rtt_min_ms>[\d.]+)/(?P<rtt_avg_ms>[\d.]+)/"
                       r"(?P<rtt_max_ms>[\d.]+)/(?P<rtt_mdev_ms>[\d.]+) ms")


def _number(text: str) -> int | float:
    return float(text) if "." in text else int(text)


def stream_fields(cmd: str, line: str) -> dict[str, Any]:
    """Fields parsed from one streamed text line, for ``-j`` (the line itself stays in ``line``).

    ``trace``: ``probe`` (the first word) and every ``key=value``; ``ping``: reply lines give
    ``bytes from icmp_seq ttl time_ms``, the summary ``transmitted received loss_pct`` and
    ``rtt_min_ms rtt_avg_ms rtt_max_ms rtt_mdev_ms``. Numbers become numbers."""
    out: dict[str, Any] = {}
    if cmd == "trace":
        words = line.split()
        if words:
            out["probe"] = words[0]
            for w in words[1:]:
                key, eq, value = w.partition("=")
                if eq:
                    out[key] = _number(value) if value.isdigit() else value
    elif cmd == "ping":
        for rx in (_PING_REPLY, _PING_SUMMARY, _PING_RTT):
            m = rx.match(line)
            if m:
                out = {k: (v if k == "from" else _number(v)) for k, v in m.groupdict().items()}
                break
    return out


RENDERERS = {"addr": addr, "route": route, "route_get": route_get, "neigh": neigh, "stats": stats,
             "sockets": sockets}
