"""Built-in control commands (the daemon side of ``tapstack addr|route|neigh|stats|sockets``).

Read-only commands ask ``stack.query(cmd, args, now)``; the mutating ones parse the
text arguments here (names to ifindexes, zones) and call core. Other parts plug in
their own commands with ``stack.control.server.register_command``; ``load_plugins()``
imports the modules in ``PLUGIN_MODULES`` that exist (their import registers them).
"""

from __future__ import annotations

import importlib
import logging
from typing import Any

from stack.control.server import CommandError, Request, register_command
from stack.core.stats import Drop
from stack.wire.addr import ip, needs_zone, parse_prefix, split_zone

log = logging.getLogger("tapstack.control")

# Modules that register more commands when imported (ping, connect from the api layer).
PLUGIN_MODULES = ("stack.api.control",)


def load_plugins() -> list[str]:
    loaded = []
    for name in PLUGIN_MODULES:
        try:
            importlib.import_module(name)
        except ModuleNotFoundError as e:
            if e.name is not None and name.startswith(e.name):
                continue        # not written yet
            log.exception("cannot load control plug-in %s; its commands are unavailable", name)
            continue
        except Exception:
            log.exception("cannot load control plug-in %s; its commands are unavailable", name)
            continue
        loaded.append(name)
    return loaded


def _query(req: Request, cmd: str, args: dict[str, Any] | None = None) -> Any:
    driver = req.ctx.driver
    if driver is not None:
        driver.fold_fastpath()      # what the fast path did counts before anyone looks
    try:
        return req.ctx.stack.query(cmd, args if args is not None else req.args, req.ctx.now())
    except CommandError:
        raise
    except (KeyError, ValueError, OSError) as e:
        raise CommandError(_text(e)) from None


def _text(e: BaseException) -> str:
    if isinstance(e, OSError) and e.strerror:
        return str(e.strerror)
    if isinstance(e, KeyError) and e.args:
        return str(e.args[0])
    return str(e)


def _ifindex(req: Request, name: str) -> int:
    if name == "lo":
        return 1
    try:
        return int(req.ctx.stack.ifindex(name))
    except KeyError:
        raise CommandError(f"no interface named {name!r}") from None


def _str_arg(req: Request, key: str, required: bool = False) -> str | None:
    v = req.args.get(key)
    if v is None:
        if required:
            raise CommandError(f"{req.cmd}: missing {key}")
        return None
    if not isinstance(v, str):
        raise CommandError(f"{req.cmd}: {key} must be a string")
    return v


def _prefix(text: str, family_hint: int = 6) -> tuple[bytes, int]:
    if text == "default":
        return (bytes(4), 0) if family_hint == 4 else (bytes(16), 0)
    try:
        return parse_prefix(text)
    except ValueError:
        raise CommandError(f"{text!r} is not an IP prefix") from None


def _addr(text: str, what: str) -> bytes:
    try:
        return ip(text)
    except ValueError:
        raise CommandError(f"{what} {text!r} is not an IP address") from None


def addr(req: Request) -> Any:
    return _query(req, "addr")


def route(req: Request) -> Any:
    return _query(req, "route")


def route_get(req: Request) -> Any:
    _str_arg(req, "dst", required=True)
    return _query(req, "route_get")


def neigh(req: Request) -> Any:
    return _query(req, "neigh")


def sockets(req: Request) -> Any:
    return _query(req, "sockets")


def stats(req: Request) -> Any:
    data = _query(req, "stats")
    driver = req.ctx.driver
    if isinstance(data, dict) and driver is not None:
        links = driver.link_counters()
        total: dict[str, int] = {}
        for counters in links.values():
            for k, v in counters.items():
                total[k] = total.get(k, 0) + v
        data["link"] = dict(sorted(total.items()))
        data["runtime"] = driver.counters()
        ifaces = data.setdefault("interfaces", {})
        if isinstance(ifaces, dict):
            for ifname, counters in links.items():
                entry = ifaces.setdefault(ifname, {})
                if isinstance(entry, dict):
                    entry.update({f"link_{k}": v for k, v in counters.items()})
    if isinstance(data, dict):
        data["control"] = {"requests": req.server.requests, "errors": req.server.errors,
                           "trace_dropped": req.server.trace.dropped_total}
        drops = data.get("drops")
        if isinstance(drops, dict):     # every reason, zeros included, so scripts can rely on the keys
            data["drops"] = dict(sorted({**{d.value: 0 for d in Drop}, **drops}.items()))
    return data


def route_add(req: Request) -> Any:
    """args: prefix, via (addr[%if]), dev, src, metric."""
    prefix = _str_arg(req, "prefix", required=True)
    via = _str_arg(req, "via")
    dev = _str_arg(req, "dev")
    src = _str_arg(req, "src")
    assert prefix is not None
    gateway = None
    gw_zone = 0
    if via is not None:
        try:
            via_text, zone = split_zone(via)
        except ValueError as e:
            raise CommandError(str(e)) from None
        gateway = _addr(via_text, "gateway")
        if zone is not None:
            if not needs_zone(gateway):
                raise CommandError(f"gateway {via!r}: only link-local addresses take a %zone")
            gw_zone = _ifindex(req, zone)
    dst, plen = _prefix(prefix, 4 if gateway is not None and len(gateway) == 4 else 6)
    ifindex = _ifindex(req, dev) if dev is not None else None
    if gateway is not None and len(gateway) == 4 and len(dst) == 16:
        raise CommandError("an IPv6 route cannot use an IPv4 gateway")
    kw: dict[str, Any] = {"gateway": gateway, "gw_zone": gw_zone, "ifindex": ifindex,
                          "src": _addr(src, "src") if src is not None else None, "now": req.ctx.now()}
    metric = req.args.get("metric")
    if metric is not None:
        if not isinstance(metric, int) or isinstance(metric, bool) or metric < 0:
            raise CommandError("metric must be a non-negative integer")
        kw["metric"] = metric
    try:
        req.ctx.stack.add_route(dst, plen, **kw)
    except (OSError, ValueError, KeyError) as e:
        raise CommandError(f"route add: {_text(e)}") from None
    log.info("control: route add %s%s%s", prefix, f" via {via}" if via else "", f" dev {dev}" if dev else "")
    return {"added": prefix}


def route_del(req: Request) -> Any:
    prefix = _str_arg(req, "prefix", required=True)
    assert prefix is not None
    dst, plen = _prefix(prefix, 4 if "." in prefix else 6)
    try:
        gone = req.ctx.stack.del_route(dst, plen, req.ctx.now())
    except (OSError, ValueError, KeyError) as e:
        raise CommandError(f"route del: {_text(e)}") from None
    if not gone:
        raise CommandError(f"route del: no such route {prefix}")
    log.info("control: route del %s", prefix)
    return {"deleted": len(gone)}


def neigh_flush(req: Request) -> Any:
    dev = _str_arg(req, "dev")
    ifindex = _ifindex(req, dev) if dev is not None else None
    return {"flushed": req.ctx.stack.flush_neighbors(ifindex, req.ctx.now())}


for _name, _fn in (("addr", addr), ("route", route), ("route_get", route_get), ("neigh", neigh),
                   ("sockets", sockets), ("stats", stats), ("route_add", route_add),
                   ("route_del", route_del), ("neigh_flush", neigh_flush)):
    register_command(_name, _fn)
