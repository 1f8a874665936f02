"""SIGHUP: re-read the configuration file and apply what can change at run time.

``reload_config(cfg, new, stack, services, now) -> ReloadResult`` (pure except for the
calls into core and the services object):

* ``[[route]]``: routes that left the file are deleted from the stack, new ones added
  (routes added with ``tapstack route add`` are left alone unless the file names the
  same prefix);
* ``[services]`` and ``[[forward]]``: listeners that left the file stop listening (their
  established connections go on), new ones start;
* ``forwarding``: router mode goes on or off at once (``Stack.set_forwarding``);
* ``[limits]``: every limit applies at run time (``Stack.set_limits``): cache and queue
  bounds from their next insert, the ICMP error rate at once, ``udp_rcvbuf`` for sockets
  opened afterwards; a key left out returns to its default;
* everything else (interfaces, addresses, loopback, name) is only compared: a
  difference is reported as "needs restart" and ignored.

The new limits (``build``'s validation) and routes are first checked on a throw-away stack with the running interfaces
(``build_stack``), so a route core would refuse makes the whole reload fail with a
``ConfigError`` and nothing changes. The caller (``Daemon``) loads the file, logs the
outcome and keeps the old configuration on any error.
"""

from __future__ import annotations

import dataclasses
import random
from dataclasses import dataclass, field
from typing import Any

from stack.control.config import ConfigError, RouteConfig, StackConfig
from stack.runtime.build import build_limits, build_stack

# Keys of StackConfig applied at run time; the others need a restart.
LIVE_KEYS = ("routes", "services", "forwards", "forwarding", "limits")
IGNORED_KEYS = ("source_path",)


@dataclass
class ReloadResult:
    routes_added: list[str] = field(default_factory=list)
    routes_deleted: list[str] = field(default_factory=list)
    started: list[str] = field(default_factory=list)
    stopped: list[str] = field(default_factory=list)
    needs_restart: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)     # "forwarding on", "limits nd_queue_max=4 ..."

    def summary(self) -> str:
        parts = list(self.changed)
        for what, items in (("route added", self.routes_added), ("route deleted", self.routes_deleted),
                            ("listening", self.started), ("stopped listening", self.stopped)):
            parts += [f"{what} {item}" for item in items]
        return "; ".join(parts) or "no change"


def route_text(r: RouteConfig) -> str:
    text = str(r.to)
    if r.via is not None:
        text += f" via {r.via}" + (f"%{r.via_zone}" if r.via_zone else "")
    if r.dev is not None:
        text += f" dev {r.dev}"
    if r.src is not None:
        text += f" src {r.src}"
    return text


def needs_restart(old: StackConfig, new: StackConfig) -> list[str]:
    """Top-level keys that differ but cannot change while running."""
    out = []
    for f in dataclasses.fields(StackConfig):
        if f.name in LIVE_KEYS or f.name in IGNORED_KEYS:
            continue
        if getattr(old, f.name) != getattr(new, f.name):
            out.append(f.name)
    return out


def check_routes(running: StackConfig, new: StackConfig) -> None:
    """Raise ConfigError if core would refuse one of ``new``'s routes on the running interfaces."""
    probe = dataclasses.replace(running, routes=new.routes, source_path=new.source_path)
    build_stack(probe, 0, random.Random(0))


def _route_args(stack: Any, r: RouteConfig) -> dict[str, Any]:
    gw_zone = 0
    if r.via_zone:
        gw_zone = 1 if r.via_zone == "lo" else stack.ifindex(r.via_zone)
    ifindex = None
    if r.dev is not None:
        ifindex = 1 if r.dev == "lo" else stack.ifindex(r.dev)
    return {"gateway": r.via.packed if r.via is not None else None, "gw_zone": gw_zone, "ifindex": ifindex,
            "src": r.src.packed if r.src is not None else None}


def reload_config(old: StackConfig, new: StackConfig, stack: Any, services: Any, now: int) -> ReloadResult:
    """Apply ``new``'s routes, services, forwards, forwarding and limits; raises
    ConfigError before changing anything."""
    res = ReloadResult(needs_restart=needs_restart(old, new))
    limits = build_limits(new) if dict(new.limits) != dict(old.limits) else None
    check_routes(old, new)
    if new.forwarding != old.forwarding:
        stack.set_forwarding(new.forwarding)
        res.changed.append(f"forwarding {'on' if new.forwarding else 'off'}")
    if limits is not None:
        stack.set_limits(limits)
        res.changed.append("limits " + (" ".join(f"{k}={v}" for k, v in sorted(new.limits.items()))
                                        or "default"))
    file = new.source_path or "<config>"
    gone = [r for r in old.routes if r not in new.routes]
    added = [r for r in new.routes if r not in old.routes]
    for r in gone:
        zone = 0
        if r.to.version == 6 and r.to.network_address.is_link_local and r.dev:
            zone = 1 if r.dev == "lo" else stack.ifindex(r.dev)
        stack.del_route(r.to.network_address.packed, r.to.prefixlen, now, zone)
        res.routes_deleted.append(route_text(r))
    for r in added:
        try:
            stack.add_route(r.to.network_address.packed, r.to.prefixlen, now=now, **_route_args(stack, r))
        except (OSError, ValueError, KeyError) as e:    # checked above; a race with `route del` at most
            raise ConfigError(file, f"route[{new.routes.index(r)}]",
                              getattr(e, "strerror", None) or str(e)) from None
        res.routes_added.append(route_text(r))
    if services is not None and hasattr(services, "reconfigure"):
        res.started, res.stopped = services.reconfigure(new)
    return res
