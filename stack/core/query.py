"""Read-only views of a Stack for the control socket (JSON-able values).

Shapes follow INTERFACE.md (``-j``); fields may be added, never removed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from stack.core.interface import LOOPBACK_IFINDEX
from stack.core.ipservice import RouteError
from stack.wire.addr import fmt, fmt_mac, fmt_prefix, ip, needs_zone, scope6, split_zone

if TYPE_CHECKING:
    from stack.core.stack import Stack


class QueryError(ValueError):
    """A bad request (unknown interface, bad address): the text goes to the user."""


def run_query(st: Stack, cmd: str, args: dict[str, Any], now: int) -> Any:
    fn = QUERIES.get(cmd)
    if fn is None:
        raise QueryError(f"unknown query {cmd!r}")
    return fn(st, args, now)


def parse_zoned(st: Stack, text: str) -> tuple[bytes, int]:
    """'fe80::1%tap0' -> (bytes, ifindex). Zone names are interface names (or numbers)."""
    addr_text, zone_text = split_zone(text)
    try:
        addr = ip(addr_text)
    except ValueError:
        raise QueryError(f"{text!r} is not an IP address") from None
    zone = 0
    if zone_text is not None:
        if zone_text.isdigit():
            zone = int(zone_text)
            if zone not in st.interfaces:
                raise QueryError(f"no interface with index {zone}")
        else:
            try:
                zone = st.ifindex(zone_text)
            except KeyError:
                raise QueryError(f"no interface named {zone_text!r}") from None
    return addr, zone


def _scope_name(addr: bytes) -> str:
    if len(addr) == 4:
        return "host" if addr[0] == 127 else "global"
    s = scope6(addr)
    return {1: "host", 2: "link" if addr != bytes(15) + b"\x01" else "host", 5: "site"}.get(s, "global")


def q_addr(st: Stack, args: dict[str, Any], now: int) -> list[dict[str, Any]]:
    out = []
    for ifx in sorted(st.interfaces):
        iface = st.interfaces[ifx]
        addrs: list[dict[str, Any]] = []
        for a4 in iface.addrs4:
            addrs.append({"address": fmt(a4.addr), "prefixlen": a4.plen, "family": "inet",
                          "scope": _scope_name(a4.addr), "state": "preferred",
                          "origin": a4.origin.value})
        for a6 in iface.addrs6:
            entry: dict[str, Any] = {"address": fmt(a6.addr), "prefixlen": a6.plen, "family": "inet6",
                                     "scope": _scope_name(a6.addr), "state": a6.state.value,
                                     "origin": a6.origin.value}
            if a6.valid_until is not None:
                entry["valid_lft"] = max(0, (a6.valid_until - now) // 1_000_000_000)
            if a6.preferred_until is not None:
                entry["preferred_lft"] = max(0, (a6.preferred_until - now) // 1_000_000_000)
            addrs.append(entry)
        out.append({"ifname": iface.name, "ifindex": ifx, "mac": fmt_mac(iface.mac),
                    "mtu": iface.mtu, "kind": iface.kind.value, "up": iface.up,
                    "ipv6_disabled": iface.ipv6_disabled, "addresses": addrs,
                    "counters": {"rx_packets": iface.counters.rx_packets,
                                 "rx_bytes": iface.counters.rx_bytes,
                                 "tx_packets": iface.counters.tx_packets,
                                 "tx_bytes": iface.counters.tx_bytes,
                                 "rx_dropped": iface.counters.rx_dropped}})
    return out


def q_route(st: Stack, args: dict[str, Any], now: int) -> list[dict[str, Any]]:
    names = st.ifnames()
    out = []
    for r in st.routes:
        dst = fmt_prefix(r.dst, r.plen)
        if r.zone:
            dst = f"{fmt(r.dst)}%{names.get(r.zone, r.zone)}/{r.plen}"
        gw = None
        if r.gateway is not None:
            gw = fmt(r.gateway)
            if r.gw_zone:
                gw += f"%{names.get(r.gw_zone, r.gw_zone)}"
        out.append({"dst": dst, "gateway": gw, "dev": names.get(r.ifindex, str(r.ifindex)),
                    "origdev": names.get(r.aifp, str(r.aifp)),
                    "src": fmt(r.src) if r.src is not None else None, "gen": st.routes.gen,
                    "proto": r.proto, "family": "inet6" if r.family == 6 else "inet",
                    "metric": r.metric,
                    "expires": None if r.expires_at is None else max(0, (r.expires_at - now) // 10**9),
                    "text": r.describe(names)})
    return out


def q_route_get(st: Stack, args: dict[str, Any], now: int) -> dict[str, Any]:
    dst, zone = parse_zoned(st, str(args.get("dst", "")))
    src = None
    if args.get("from"):
        src, _ = parse_zoned(st, str(args["from"]))
    if needs_zone(dst) and not zone:
        raise QueryError(f"{fmt(dst)} is link-local: give its zone ({fmt(dst)}%IFNAME)")
    try:
        r = st.route_output(dst, zone, src, now)
    except RouteError as e:
        raise QueryError(f"{e.strerror}") from None
    names = st.ifnames()
    gw = None
    if r.nexthop != r.dst:
        gw = st.fmt_zoned(r.nexthop, r.nexthop_zone)
    return {"dst": st.fmt_zoned(r.dst, r.zone), "gateway": gw, "dev": names.get(r.ifp, str(r.ifp)),
            "origdev": names.get(r.origifp, str(r.origifp)), "src": st.fmt_zoned(r.src, r.src_zone),
            "gen": r.gen, "mtu": r.mtu, "local": r.local,
            "proto": "local" if r.ifp == LOOPBACK_IFINDEX else "unicast"}


def q_neigh(st: Stack, args: dict[str, Any], now: int) -> list[dict[str, Any]]:
    names = st.ifnames()
    dev = args.get("dev")
    out = []
    for cache in (st.nd, st.arp):
        for e in cache.entries.values():
            if dev and names.get(e.ifindex) != dev:
                continue
            out.append({"dst": fmt(e.addr), "dev": names.get(e.ifindex, str(e.ifindex)),
                        "lladdr": fmt_mac(e.lladdr) if e.lladdr is not None else None,
                        "state": e.state.value, "router": e.is_router,
                        "family": "inet6" if len(e.addr) == 16 else "inet",
                        "queued": len(e.queue), "probes": e.probes})
    return out


def q_stats(st: Stack, args: dict[str, Any], now: int) -> dict[str, Any]:
    snap: dict[str, Any] = st.stats.snapshot()
    snap.setdefault("nd", {})
    snap["nd"] = dict(snap["nd"], cache_entries=len(st.nd.entries), queue_drops=st.nd.queue_drops,
                      evictions=st.nd.evictions, gc_stale=st.nd.gc_collected)
    if st.tcp is not None:
        # gauges beside the counters, as for nd: the TCP memory pool (limits.tcp_mem)
        snap["tcp"] = dict(snap.get("tcp", {}), mem_used=st.tcp.mem.used, mem_limit=st.tcp.mem.limit)
    snap["interfaces"] = {iface.name: {"rx_packets": iface.counters.rx_packets,
                                       "rx_bytes": iface.counters.rx_bytes,
                                       "tx_packets": iface.counters.tx_packets,
                                       "tx_bytes": iface.counters.tx_bytes,
                                       "rx_dropped": iface.counters.rx_dropped}
                          for iface in st.interfaces.values()}
    return snap


def q_sockets(st: Stack, args: dict[str, Any], now: int) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for ep in st.udp.sockets():
        local = f"{st.fmt_zoned(ep.local, ep.zone) if ep.local else '*'}:{ep.port}"
        remote = "*:*"
        if ep.remote is not None:
            remote = f"{st.fmt_zoned(ep.remote[0], ep.remote[2])}:{ep.remote[1]}"
        out.append({"proto": "udp" if ep.family != 6 else "udp6", "state": "UNCONN" if ep.remote is None
                    else "ESTAB", "local": local, "remote": remote, "recv_q": ep.queued_bytes,
                    "send_q": 0})
    if st.tcp is not None and hasattr(st.tcp, "sockets"):
        out.extend(st.tcp.sockets())
    return out


QUERIES = {"addr": q_addr, "route": q_route, "route_get": q_route_get, "neigh": q_neigh,
           "stats": q_stats, "sockets": q_sockets}
