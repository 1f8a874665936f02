"""Turn a ``StackConfig`` into a configured core ``Stack`` (no I/O, no TAPs).

``build_stack(cfg, now, rng)`` adds the loopback addresses (ifindex 1), the interfaces
in configuration order (ifindex 2, 3, ...), their addresses and static neighbors,
then the routes. A route that core refuses (gateway not on a connected network, src
not local) raises ``ConfigError`` with the route's key path, so ``tapstack run``
rejects it before touching the system.
"""

from __future__ import annotations

import dataclasses
import random
from typing import Any

from stack.control.config import ConfigError, StackConfig
from stack.link.tap import random_mac


def build_limits(cfg: StackConfig) -> Any:
    from stack.core.stack import Limits

    if not cfg.limits:
        return Limits()
    names = {f.name for f in dataclasses.fields(Limits)}
    for key in cfg.limits:
        if key not in names:
            raise ConfigError(cfg.source_path or "<config>", f"limits.{key}",
                              f"unknown limit (expected one of: {', '.join(sorted(names))})")
    return Limits(**dict(cfg.limits))


def _ns(ms: int | None) -> int | None:
    return None if ms is None else ms * 1_000_000


def interface_macs(cfg: StackConfig, rng: random.Random) -> dict[str, bytes]:
    """The stack's MAC per interface: the configured one or a random local unicast one."""
    return {i.name: i.mac or random_mac(rng.randbytes(6)) for i in cfg.interfaces}


def build_stack(cfg: StackConfig, now: int, rng: random.Random, *,
                macs: dict[str, bytes] | None = None) -> Any:
    from stack.core.stack import Stack

    file = cfg.source_path or "<config>"
    macs = macs or interface_macs(cfg, rng)
    st = Stack(rng=rng, now=now, forwarding=cfg.forwarding, limits=build_limits(cfg))
    for i, a in enumerate(cfg.loopback.addresses):
        try:
            st.add_address(1, a.packed, a.prefixlen, now)
        except (ValueError, OSError) as e:
            raise ConfigError(file, f"loopback.addresses[{i}]", str(e)) from None
    for n, iface in enumerate(cfg.interfaces):
        ifx = st.add_interface(iface.name, macs[iface.name], iface.mtu, accept_ra=iface.accept_ra, now=now,
                               optimistic_dad=iface.optimistic_dad)
        if iface.nd is not None:
            nd = iface.nd
            st.set_nd_params(ifx, base_reachable_time=_ns(nd.base_reachable_time_ms),
                             retrans_timer=_ns(nd.retrans_timer_ms),
                             delay_first_probe_time=_ns(nd.delay_first_probe_time_ms),
                             gc_stale_time=_ns(nd.gc_stale_time_ms))
        for i, a in enumerate(iface.addresses):
            try:
                st.add_address(ifx, a.packed, a.prefixlen, now)
            except (ValueError, OSError) as e:
                raise ConfigError(file, f"interface[{n}].addresses[{i}]", str(e)) from None
        for i, nb in enumerate(iface.neighbors):
            try:
                st.add_neighbor(ifx, nb.address.packed, nb.mac, now)
            except (ValueError, OSError) as e:
                raise ConfigError(file, f"interface[{n}].neighbors[{i}]", str(e)) from None
    for i, r in enumerate(cfg.routes):
        gw_zone = st.ifindex(r.via_zone) if r.via_zone and r.via_zone != "lo" else (1 if r.via_zone else 0)
        ifindex = None
        if r.dev is not None:
            ifindex = 1 if r.dev == "lo" else st.ifindex(r.dev)
        try:
            st.add_route(r.to.network_address.packed, r.to.prefixlen,
                         gateway=r.via.packed if r.via is not None else None, gw_zone=gw_zone,
                         ifindex=ifindex, src=r.src.packed if r.src is not None else None, now=now)
        except OSError as e:
            raise ConfigError(file, f"route[{i}]", e.strerror or str(e)) from None
        except ValueError as e:
            raise ConfigError(file, f"route[{i}]", str(e)) from None
    return st
