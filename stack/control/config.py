"""The TOML configuration: parse, validate, and hand out frozen dataclasses.

``load_config(path)`` reads a file (INTERFACE.md "Configuration") and returns a
``StackConfig``; ``StackConfig.default()`` is the built-in default that
``tapstack run`` uses without ``-c``. Every problem raises ``ConfigError`` naming
the file, the key path (``interface[0].addresses[1]``) and what is wrong, before
anything on the system is touched. Only syntax and consistency are checked here:
which prefixes a test may use is the tests' business.

Peer routes are kept both as text and as a parsed ``PeerRoute`` (iproute2 words:
``PREFIX|default [via [inet|inet6] ADDR] [dev IF] [src ADDR] [metric N]``).
"""

from __future__ import annotations

import ipaddress
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from stack.link.faults import FaultConfig

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

IFNAMSIZ = 16  # kernel limit incl. the NUL: names are at most 15 characters
DEFAULT_NAME = "tapstack"
_NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}$")
_IFNAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.:-]{0,14}$")
_SYSCTL_RE = re.compile(r"^[a-z0-9_]{1,64}$")


class ConfigError(Exception):
    """A configuration problem: ``FILE: key.path: problem``."""

    def __init__(self, file: str, keypath: str, problem: str) -> None:
        self.file = file
        self.keypath = keypath
        self.problem = problem
        where = f"{file}: {keypath}" if keypath else file
        super().__init__(f"{where}: {problem}")


# ---------------------------------------------------------------------------
# values


@dataclass(frozen=True, slots=True)
class IfAddress:
    """An address with its prefix length, as ``ip addr add`` takes it."""

    address: IPAddress
    prefixlen: int

    @property
    def version(self) -> int:
        return self.address.version

    @property
    def packed(self) -> bytes:
        return self.address.packed

    def __str__(self) -> str:
        return f"{self.address}/{self.prefixlen}"


@dataclass(frozen=True, slots=True)
class NeighborConfig:
    """A static (PERMANENT) neighbor entry on an interface."""

    address: IPAddress
    mac: bytes


@dataclass(frozen=True, slots=True)
class PeerRoute:
    """One kernel-side route in iproute2 words, parsed."""

    text: str
    dst: IPNetwork
    via: IPAddress | None = None
    dev: str | None = None          # None: the TAP itself
    src: IPAddress | None = None
    metric: int | None = None


@dataclass(frozen=True, slots=True)
class PeerConfig:
    """The kernel side of a TAP."""

    netns: str | None = None        # None: stay in the daemon's namespace
    addresses: tuple[IfAddress, ...] = ()
    routes: tuple[PeerRoute, ...] = ()
    nodad: bool = False             # add IPv6 addresses with IFA_F_NODAD
    sysctl: tuple[tuple[str, int], ...] = ()   # net.ipv6.conf.<tap>.<key> = value, set before link up
    mtu: int | None = None          # kernel-side MTU; default: the interface's


@dataclass(frozen=True, slots=True)
class NdConfig:
    """``[interface.nd]``: ND timing in milliseconds, named after the Linux
    net.ipv6.neigh.IF.* sysctls; None keeps the RFC 4861 §10 default."""

    base_reachable_time_ms: int | None = None     # default 30000 (REACHABLE_TIME)
    retrans_timer_ms: int | None = None           # default 1000 (RETRANS_TIMER)
    delay_first_probe_time_ms: int | None = None  # default 5000 (DELAY_FIRST_PROBE_TIME)
    gc_stale_time_ms: int | None = None           # default 60000: unused STALE entries go


@dataclass(frozen=True, slots=True)
class InterfaceConfig:
    name: str
    mac: bytes | None = None        # None: a random locally administered MAC
    mtu: int = 1500
    addresses: tuple[IfAddress, ...] = ()
    accept_ra: bool = False
    offload: bool = True            # TAP offloads (virtio-net header, CSUM/TSO4/TSO6), plain-frame fallback
    gso: bool = True                # without offloads: 64 KB TCP segments cut in C at the TAP (stack.link.gso)
    gro: bool = True                # merge received TCP segments of a flow in C (native/fastpath.c, needs fastpath)
    optimistic_dad: bool = False    # RFC 4429: addresses usable during DAD (Linux optimistic_dad sysctl)
    neighbors: tuple[NeighborConfig, ...] = ()
    peer: PeerConfig | None = None
    faults: FaultConfig | None = None   # [interface.faults]: seeded impairments on this link
    nd: NdConfig | None = None          # [interface.nd]: ND timing knobs


@dataclass(frozen=True, slots=True)
class LoopbackConfig:
    addresses: tuple[IfAddress, ...] = ()


@dataclass(frozen=True, slots=True)
class RouteConfig:
    """A route in the stack's own table."""

    to: IPNetwork
    via: IPAddress | None = None
    via_zone: str | None = None     # interface name of a link-local gateway
    dev: str | None = None
    src: IPAddress | None = None


@dataclass(frozen=True, slots=True)
class ServicesConfig:
    echo: int | None = None
    discard: int | None = None
    daytime: int | None = None
    chargen: int | None = None

    def enabled(self) -> dict[str, int]:
        out = {"echo": self.echo, "discard": self.discard, "daytime": self.daytime, "chargen": self.chargen}
        return {k: v for k, v in out.items() if v is not None}


@dataclass(frozen=True, slots=True)
class ForwardConfig:
    """A TCP relay: the stack's port ``listen`` to the host socket ``to``."""

    listen: int
    to: str
    to_host: str
    to_port: int


@dataclass(frozen=True)
class StackConfig:
    name: str = DEFAULT_NAME
    forwarding: bool = False
    busy_poll_us: int = 0       # keep reading the TAPs this long after a frame (0: off)
    fastpath: bool = True       # native per-flow fast path for forwarding and echo (stack.link.fastpath)
    loopback: LoopbackConfig = field(default_factory=LoopbackConfig)
    interfaces: tuple[InterfaceConfig, ...] = ()
    routes: tuple[RouteConfig, ...] = ()
    services: ServicesConfig = field(default_factory=ServicesConfig)
    forwards: tuple[ForwardConfig, ...] = ()
    limits: Mapping[str, int] = field(default_factory=dict)
    source_path: str | None = None

    @staticmethod
    def default() -> StackConfig:
        """INTERFACE.md's built-in default (documentation prefixes only)."""
        return parse_config(DEFAULT_TOML, "<built-in default>")

    def interface(self, name: str) -> InterfaceConfig:
        for iface in self.interfaces:
            if iface.name == name:
                return iface
        raise KeyError(name)


DEFAULT_TOML = """
name = "tapstack"
forwarding = false

[loopback]
addresses = ["2001:db8:ff::1/128", "198.51.100.1/32"]

[[interface]]
name = "tap0"
addresses = ["2001:db8:1::2/64", "192.0.2.2/24"]

[interface.peer]
addresses = ["2001:db8:1::1/64", "192.0.2.1/24"]
routes = [
  "2001:db8:ff::1/128 via 2001:db8:1::2",
  "198.51.100.1/32 via 192.0.2.2",
]

[services]
echo = 7
discard = 9
daytime = 13
chargen = 19
"""


# ---------------------------------------------------------------------------
# parsing helpers


T = TypeVar("T")

_STANDARD_PORTS = {"echo": 7, "discard": 9, "daytime": 13, "chargen": 19}


def _type_name(v: object) -> str:
    return {bool: "boolean", int: "integer", float: "float", str: "string", list: "array",
            dict: "table"}.get(type(v), type(v).__name__)


class _Parser:
    def __init__(self, file: str) -> None:
        self.file = file

    def fail(self, keypath: str, problem: str) -> ConfigError:
        return ConfigError(self.file, keypath, problem)

    def table(self, v: object, keypath: str, allowed: tuple[str, ...]) -> dict[str, Any]:
        if not isinstance(v, dict):
            raise self.fail(keypath, f"expected a table, got {_type_name(v)}")
        for key in v:
            if key not in allowed:
                path = f"{keypath}.{key}" if keypath else key
                raise self.fail(path, f"unknown key (expected one of: {', '.join(allowed)})")
        return v

    def typed(self, v: object, keypath: str, typ: type[T], what: str) -> T:
        # bool is a subclass of int: refuse it where an integer is expected.
        if not isinstance(v, typ) or (typ is int and isinstance(v, bool)):
            shown = f" {v!r}" if isinstance(v, str | int | float | bool) else ""
            raise self.fail(keypath, f"expected {what}, got {_type_name(v)}{shown}")
        return v

    def string(self, v: object, keypath: str) -> str:
        return self.typed(v, keypath, str, "a string")

    def boolean(self, v: object, keypath: str) -> bool:
        return self.typed(v, keypath, bool, "a boolean (true or false)")

    def integer(self, v: object, keypath: str, lo: int, hi: int) -> int:
        n = self.typed(v, keypath, int, "an integer")
        if not lo <= n <= hi:
            raise self.fail(keypath, f"{n} is out of range ({lo}..{hi})")
        return n

    def array(self, v: object, keypath: str, item: Callable[[object, str], T]) -> tuple[T, ...]:
        items = self.typed(v, keypath, list, "an array")
        return tuple(item(x, f"{keypath}[{i}]") for i, x in enumerate(items))

    # -- addresses -------------------------------------------------------

    def address(self, v: object, keypath: str, *, zone_ok: bool = False) -> tuple[IPAddress, str | None]:
        text = self.string(v, keypath)
        addr_text, zone = text, None
        if "%" in text:
            addr_text, zone = text.split("%", 1)
            if not zone_ok:
                raise self.fail(keypath, f"{text!r}: a zone (%{zone}) is not allowed here")
        try:
            addr = ipaddress.ip_address(addr_text)
        except ValueError:
            raise self.fail(keypath, f"{text!r} is not an IP address") from None
        if zone is not None:
            if not zone or not _IFNAME_RE.match(zone):
                raise self.fail(keypath, f"{text!r}: bad zone {zone!r}")
            if addr.version != 6 or not addr.is_link_local:
                raise self.fail(keypath, f"{text!r}: only link-local IPv6 addresses take a %zone")
        return addr, zone

    def if_address(self, v: object, keypath: str) -> IfAddress:
        text = self.string(v, keypath)
        if "%" in text:
            raise self.fail(keypath, f"{text!r}: no %zone here (the interface is the zone)")
        try:
            iface = ipaddress.ip_interface(text)
        except ValueError:
            raise self.fail(keypath, f"{text!r} is not an IP prefix") from None
        addr = iface.ip
        if addr.is_multicast or addr.is_unspecified:
            raise self.fail(keypath, f"{text!r}: not a unicast address")
        return IfAddress(addr, iface.network.prefixlen)

    def network(self, text: str, keypath: str) -> IPNetwork:
        try:
            return ipaddress.ip_network(text, strict=True)
        except ValueError as e:
            if "host bits set" in str(e):
                raise self.fail(keypath, f"{text!r} has host bits set") from None
            raise self.fail(keypath, f"{text!r} is not an IP prefix") from None

    def mac(self, v: object, keypath: str) -> bytes:
        text = self.string(v, keypath)
        parts = text.replace("-", ":").split(":")
        try:
            if len(parts) != 6 or not all(1 <= len(p) <= 2 for p in parts):
                raise ValueError
            raw = bytes(int(p, 16) for p in parts)
        except ValueError:
            raise self.fail(keypath, f"{text!r} is not a MAC address") from None
        if raw[0] & 1:
            raise self.fail(keypath, f"{text!r} is a multicast MAC address")
        if raw == bytes(6):
            raise self.fail(keypath, f"{text!r} is the all-zero MAC address")
        return raw

    def ifname(self, v: object, keypath: str) -> str:
        name = self.string(v, keypath)
        if len(name) > IFNAMSIZ - 1:
            raise self.fail(keypath, f"{name!r} is longer than {IFNAMSIZ - 1} characters")
        if not _IFNAME_RE.match(name) or name in (".", ".."):
            raise self.fail(keypath, f"{name!r} is not a valid interface name")
        if name == "lo":
            raise self.fail(keypath, "'lo' is the stack's loopback; configure it under [loopback]")
        return name


# ---------------------------------------------------------------------------
# sections


_TOP_KEYS = ("name", "forwarding", "busy_poll_us", "fastpath", "loopback", "interface", "route", "services", "forward", "limits")
_IF_KEYS = ("name", "mac", "mtu", "addresses", "accept_ra", "offload", "gso", "gro", "optimistic_dad", "neighbors", "peer",
            "faults", "nd")
# [interface.nd] key -> allowed range in ms (RFC 4861 §6.2.1: MAX_REACHABLE_TIME is one hour)
_ND_RANGES = {"base_reachable_time_ms": (100, 3_600_000), "retrans_timer_ms": (10, 3_600_000),
              "delay_first_probe_time_ms": (10, 3_600_000), "gc_stale_time_ms": (1000, 86_400_000)}
_FAULT_FLOATS = ("loss", "duplicate", "reorder", "corrupt", "delay_ms", "jitter_ms", "reorder_ms")
_FAULT_KEYS = (*_FAULT_FLOATS, "limit", "seed", "direction")
_PEER_KEYS = ("netns", "addresses", "routes", "nodad", "sysctl", "mtu")
_ROUTE_KEYS = ("to", "via", "dev", "src")


def parse_config(text: str, file: str) -> StackConfig:
    """Parse TOML text; ``file`` is what error messages call it."""
    p = _Parser(file)
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(file, "", f"TOML syntax error: {e}") from None
    p.table(doc, "", _TOP_KEYS)

    name = DEFAULT_NAME
    if "name" in doc:
        name = p.string(doc["name"], "name")
        if not _NAME_RE.match(name):
            raise p.fail("name", f"{name!r}: use 1-64 letters, digits, '_', '.', '-' (not starting with '.' or '-')")
    forwarding = p.boolean(doc["forwarding"], "forwarding") if "forwarding" in doc else False
    busy_poll_us = p.integer(doc["busy_poll_us"], "busy_poll_us", 0, 10_000) if "busy_poll_us" in doc else 0
    fastpath = p.boolean(doc["fastpath"], "fastpath") if "fastpath" in doc else True

    loopback = LoopbackConfig()
    if "loopback" in doc:
        lt = p.table(doc["loopback"], "loopback", ("addresses",))
        if "addresses" in lt:
            loopback = LoopbackConfig(p.array(lt["addresses"], "loopback.addresses", p.if_address))

    interfaces = _interfaces(p, doc.get("interface", []))
    ifnames = {i.name for i in interfaces}
    routes = p.array(doc["route"], "route", lambda v, k: _route(p, v, k, ifnames)) if "route" in doc else ()
    services = _services(p, doc["services"]) if "services" in doc else ServicesConfig()
    forwards = p.array(doc["forward"], "forward", lambda v, k: _forward(p, v, k)) if "forward" in doc else ()
    limits = _limits(p, doc["limits"]) if "limits" in doc else {}
    return StackConfig(name=name, forwarding=forwarding, busy_poll_us=busy_poll_us, fastpath=fastpath,
                       loopback=loopback,
                       interfaces=interfaces,
                       routes=routes, services=services, forwards=forwards, limits=limits,
                       source_path=file)


def load_config(path: str | Path) -> StackConfig:
    """Read and validate a configuration file."""
    file = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(file, "", "no such file") from None
    except UnicodeDecodeError:
        raise ConfigError(file, "", "not UTF-8 text") from None
    except OSError as e:
        raise ConfigError(file, "", e.strerror or str(e)) from None
    return parse_config(text, file)


def _interfaces(p: _Parser, v: object) -> tuple[InterfaceConfig, ...]:
    items = p.typed(v, "interface", list, "an array of tables ([[interface]])")
    out: list[InterfaceConfig] = []
    seen: dict[str, int] = {}
    for i, raw in enumerate(items):
        kp = f"interface[{i}]"
        t = p.table(raw, kp, _IF_KEYS)
        if "name" not in t:
            raise p.fail(f"{kp}.name", "missing (every interface needs a name)")
        name = p.ifname(t["name"], f"{kp}.name")
        if name in seen:
            raise p.fail(f"{kp}.name", f"duplicate interface name {name!r} (also interface[{seen[name]}])")
        seen[name] = i
        mac = p.mac(t["mac"], f"{kp}.mac") if "mac" in t else None
        mtu = p.integer(t["mtu"], f"{kp}.mtu", 1280, 65535) if "mtu" in t else 1500
        addresses = p.array(t.get("addresses", []), f"{kp}.addresses", p.if_address)
        _no_duplicates(p, addresses, f"{kp}.addresses")
        accept_ra = p.boolean(t["accept_ra"], f"{kp}.accept_ra") if "accept_ra" in t else False
        offload = p.boolean(t["offload"], f"{kp}.offload") if "offload" in t else True
        gso = p.boolean(t["gso"], f"{kp}.gso") if "gso" in t else True
        gro = p.boolean(t["gro"], f"{kp}.gro") if "gro" in t else True
        odad = p.boolean(t["optimistic_dad"], f"{kp}.optimistic_dad") if "optimistic_dad" in t else False
        neighbors = p.array(t.get("neighbors", []), f"{kp}.neighbors", lambda v, k: _neighbor(p, v, k))
        peer = _peer(p, t["peer"], f"{kp}.peer", name) if "peer" in t else None
        faults = _faults(p, t["faults"], f"{kp}.faults") if "faults" in t else None
        nd = _nd(p, t["nd"], f"{kp}.nd") if "nd" in t else None
        out.append(InterfaceConfig(name=name, mac=mac, mtu=mtu, addresses=addresses, accept_ra=accept_ra,
                                   offload=offload, gso=gso, gro=gro, optimistic_dad=odad, neighbors=neighbors, peer=peer, faults=faults, nd=nd))
    return tuple(out)


def _no_duplicates(p: _Parser, addresses: tuple[IfAddress, ...], keypath: str) -> None:
    seen: set[IPAddress] = set()
    for i, a in enumerate(addresses):
        if a.address in seen:
            raise p.fail(f"{keypath}[{i}]", f"duplicate address {a.address}")
        seen.add(a.address)


def _faults(p: _Parser, v: object, kp: str) -> FaultConfig:
    t = p.table(v, kp, _FAULT_KEYS)
    kw: dict[str, Any] = {}
    for key in _FAULT_FLOATS:
        if key in t:
            val = t[key]
            if isinstance(val, bool) or not isinstance(val, int | float):
                raise p.fail(f"{kp}.{key}", f"expected a number, got {_type_name(val)}")
            kw[key] = float(val)
    if "limit" in t:
        kw["limit"] = p.integer(t["limit"], f"{kp}.limit", 1, 10_000_000)
    if "seed" in t:
        kw["seed"] = p.integer(t["seed"], f"{kp}.seed", 0, 2**63 - 1)
    if "direction" in t:
        kw["direction"] = p.string(t["direction"], f"{kp}.direction")
    cfg = FaultConfig(**kw)
    for problem in cfg.validate():
        key, _, text = problem.partition(": ")
        raise p.fail(f"{kp}.{key}", text)
    return cfg


def _nd(p: _Parser, v: object, kp: str) -> NdConfig:
    t = p.table(v, kp, tuple(_ND_RANGES))
    kw = {key: p.integer(val, f"{kp}.{key}", *_ND_RANGES[key]) for key, val in t.items()}
    return NdConfig(**kw)


def _neighbor(p: _Parser, v: object, kp: str) -> NeighborConfig:
    t = p.table(v, kp, ("address", "mac"))
    for key in ("address", "mac"):
        if key not in t:
            raise p.fail(f"{kp}.{key}", "missing")
    addr, _ = p.address(t["address"], f"{kp}.address")
    return NeighborConfig(addr, p.mac(t["mac"], f"{kp}.mac"))


def _peer(p: _Parser, v: object, kp: str, ifname: str) -> PeerConfig:
    t = p.table(v, kp, _PEER_KEYS)
    netns = None
    if "netns" in t:
        netns = p.string(t["netns"], f"{kp}.netns")
        if not _NAME_RE.match(netns) or len(netns) > 64:
            raise p.fail(f"{kp}.netns", f"{netns!r} is not a valid namespace name")
    addresses = p.array(t.get("addresses", []), f"{kp}.addresses", p.if_address)
    _no_duplicates(p, addresses, f"{kp}.addresses")
    routes = p.array(t.get("routes", []), f"{kp}.routes", lambda v, k: parse_peer_route(p, v, k))
    nodad = p.boolean(t["nodad"], f"{kp}.nodad") if "nodad" in t else False
    sysctl: list[tuple[str, int]] = []
    if "sysctl" in t:
        st = p.typed(t["sysctl"], f"{kp}.sysctl", dict, "a table of net.ipv6.conf.<if> settings")
        for key, val in st.items():
            if not _SYSCTL_RE.match(key):
                raise p.fail(f"{kp}.sysctl.{key}", "not a net.ipv6.conf setting name")
            sysctl.append((key, p.integer(val, f"{kp}.sysctl.{key}", -(2**31), 2**31 - 1)))
    mtu = p.integer(t["mtu"], f"{kp}.mtu", 1280, 65535) if "mtu" in t else None
    return PeerConfig(netns=netns, addresses=addresses, routes=routes, nodad=nodad, sysctl=tuple(sysctl), mtu=mtu)


def parse_peer_route(p: _Parser | str, v: object, kp: str) -> PeerRoute:
    """``PREFIX|default [via [inet|inet6] ADDR] [dev IF] [src ADDR] [metric N]``."""
    if isinstance(p, str):
        p = _Parser(p)
    text = p.string(v, kp)
    words = text.split()
    if not words:
        raise p.fail(kp, "empty route")
    dst_word, rest = words[0], words[1:]
    via: IPAddress | None = None
    via_family: int | None = None
    dev = src = metric = None
    i = 0
    while i < len(rest):
        word = rest[i]
        if i + 1 >= len(rest):
            raise p.fail(kp, f"{text!r}: {word!r} needs a value")
        arg = rest[i + 1]
        i += 2
        if word == "via":
            if arg in ("inet", "inet6"):
                via_family = 4 if arg == "inet" else 6
                if i >= len(rest):
                    raise p.fail(kp, f"{text!r}: 'via {arg}' needs an address")
                arg = rest[i]
                i += 1
            try:
                via = ipaddress.ip_address(arg)
            except ValueError:
                raise p.fail(kp, f"{text!r}: {arg!r} is not an IP address") from None
            if via_family is not None and via.version != via_family:
                raise p.fail(kp, f"{text!r}: {arg!r} is not an {'inet6' if via_family == 6 else 'inet'} address")
        elif word == "dev":
            dev = p.ifname(arg, kp) if arg != "lo" else "lo"
        elif word == "src":
            try:
                src = ipaddress.ip_address(arg)
            except ValueError:
                raise p.fail(kp, f"{text!r}: {arg!r} is not an IP address") from None
        elif word == "metric":
            if not arg.isdigit():
                raise p.fail(kp, f"{text!r}: metric {arg!r} is not a number")
            metric = int(arg)
        else:
            raise p.fail(kp, f"{text!r}: unknown word {word!r} (expected via, dev, src, metric)")
    if dst_word == "default":
        if via is None:
            raise p.fail(kp, f"{text!r}: 'default' needs 'via' (or write ::/0 or 0.0.0.0/0)")
        dst_family = via.version if via_family is None else 4 if via.version == 4 else 6
        dst: IPNetwork = ipaddress.ip_network("::/0" if dst_family == 6 else "0.0.0.0/0")
    else:
        dst = p.network(dst_word, kp)
    if via is not None and via.version == 4 and dst.version == 6:
        raise p.fail(kp, f"{text!r}: an IPv6 route cannot use an IPv4 gateway")
    if src is not None and src.version != dst.version:
        raise p.fail(kp, f"{text!r}: src {src} is not of the destination's family")
    return PeerRoute(text=text, dst=dst, via=via, dev=dev, src=src, metric=metric)


def _route(p: _Parser, v: object, kp: str, ifnames: set[str]) -> RouteConfig:
    t = p.table(v, kp, _ROUTE_KEYS)
    if "to" not in t:
        raise p.fail(f"{kp}.to", "missing (the destination prefix)")
    to_text = p.string(t["to"], f"{kp}.to")
    via: IPAddress | None = None
    zone: str | None = None
    if "via" in t:
        via, zone = p.address(t["via"], f"{kp}.via", zone_ok=True)
    if to_text == "default":
        if via is None:
            raise p.fail(f"{kp}.to", "'default' needs 'via' (or write ::/0 or 0.0.0.0/0)")
        to: IPNetwork = ipaddress.ip_network("::/0" if via.version == 6 else "0.0.0.0/0")
    else:
        to = p.network(to_text, f"{kp}.to")
    known = ifnames | {"lo"}
    dev = None
    if "dev" in t:
        dev = p.string(t["dev"], f"{kp}.dev")
        if dev not in known:
            raise p.fail(f"{kp}.dev", f"no interface named {dev!r} in this configuration")
    if zone is not None and zone not in known:
        raise p.fail(f"{kp}.via", f"no interface named {zone!r} in this configuration")
    if zone is not None and dev is not None and zone != dev:
        raise p.fail(f"{kp}.via", f"zone %{zone} contradicts dev {dev!r}")
    if via is not None:
        if via.version == 4 and to.version == 6:
            raise p.fail(f"{kp}.via", "an IPv6 route cannot use an IPv4 gateway")
        if via.version == 6 and via.is_link_local and zone is None:
            if dev is not None:
                zone = dev
            elif len(ifnames) == 1:
                zone = next(iter(ifnames))
            else:
                raise p.fail(f"{kp}.via", f"link-local gateway {via} needs a zone ('{via}%IFNAME') or 'dev'")
    elif dev is None:
        raise p.fail(kp, "a route needs 'via' or 'dev'")
    src = None
    if "src" in t:
        src, _ = p.address(t["src"], f"{kp}.src")
        if src.version != to.version:
            raise p.fail(f"{kp}.src", f"{src} is not of the destination's family")
    return RouteConfig(to=to, via=via, via_zone=zone, dev=dev, src=src)


def _services(p: _Parser, v: object) -> ServicesConfig:
    t = p.table(v, "services", tuple(_STANDARD_PORTS))
    ports: dict[str, int | None] = {}
    for key, val in t.items():
        kp = f"services.{key}"
        if isinstance(val, bool):
            ports[key] = _STANDARD_PORTS[key] if val else None
        else:
            ports[key] = p.integer(val, kp, 1, 65535)
    return ServicesConfig(**ports)


def _forward(p: _Parser, v: object, kp: str) -> ForwardConfig:
    t = p.table(v, kp, ("listen", "to"))
    for key in ("listen", "to"):
        if key not in t:
            raise p.fail(f"{kp}.{key}", "missing")
    listen = p.integer(t["listen"], f"{kp}.listen", 1, 65535)
    to = p.string(t["to"], f"{kp}.to")
    host, port = _host_port(p, to, f"{kp}.to")
    return ForwardConfig(listen=listen, to=to, to_host=host, to_port=port)


def _host_port(p: _Parser, text: str, kp: str) -> tuple[str, int]:
    m = re.match(r"^\[([^\]]+)\]:(\d+)$", text) or re.match(r"^([^:\[\]]+):(\d+)$", text)
    if not m:
        raise p.fail(kp, f"{text!r}: expected HOST:PORT or [IPV6]:PORT")
    host, port_text = m.group(1), m.group(2)
    port = int(port_text)
    if not 1 <= port <= 65535:
        raise p.fail(kp, f"{text!r}: port {port} is out of range (1..65535)")
    return host, port


def _limits(p: _Parser, v: object) -> dict[str, int]:
    t = p.typed(v, "limits", dict, "a table")
    known = _core_limit_names()
    out: dict[str, int] = {}
    for key, val in t.items():
        kp = f"limits.{key}"
        if known is not None and key not in known:
            raise p.fail(kp, f"unknown limit (expected one of: {', '.join(sorted(known))})")
        out[key] = p.integer(val, kp, 0, 2**31 - 1)
    return out


def _core_limit_names() -> set[str] | None:
    """Field names of core's ``Limits`` when core provides it, else None (accept any)."""
    import dataclasses
    import importlib

    try:
        core_stack = importlib.import_module("stack.core.stack")
    except Exception:
        return None
    limits = getattr(core_stack, "Limits", None)
    if limits is None or not dataclasses.is_dataclass(limits):
        return None
    return {f.name for f in dataclasses.fields(limits)}
