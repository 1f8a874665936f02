"""The ``tapstack`` command line (INTERFACE.md "Running" and "Talking to a running stack").

``--name`` and ``-j/--json`` work before and after the subcommand. Every error is
one ``tapstack: ...`` line on stderr and exit status 2 (``ping``: 1 when no reply;
``connect``: 1 with the errno text when the connection fails).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import threading
from collections.abc import Sequence
from typing import Any

from stack.control import render
from stack.control.client import ControlClient, ControlError

PROG = "tapstack"
DEFAULT_NAME = "tapstack"


class UsageError(Exception):
    pass


def _fmt(text: str) -> str:
    return text.strip("\n")


DESCRIPTION = """\
A userspace IPv6/IPv4 network stack on Linux TAP interfaces.

`tapstack run` starts a stack (as root) and keeps it in the foreground; the other
commands talk to a running stack over its control socket /run/tapstack/NAME.sock."""

EPILOG = """\
examples:
  sudo tapstack run                          built-in default: tap0, 2001:db8:1::2/64, 192.0.2.2/24
  sudo tapstack run -c lab.toml --pcap /tmp/pcap
  tapstack addr                              addresses and their DAD state
  tapstack -j --name lab neigh               neighbor cache of stack "lab" as JSON
  tapstack route get 2001:db8:ff::1
  tapstack ping -c 3 2001:db8:1::1
  echo hi | tapstack connect 2001:db8:1::2 7

Run `tapstack COMMAND --help` for the details of one command."""


def _common(parser: argparse.ArgumentParser, *, top: bool) -> None:
    default_name = None if top else argparse.SUPPRESS
    default_json = False if top else argparse.SUPPRESS
    parser.add_argument("--name", metavar="NAME", default=default_name,
                        help="the stack instance to use (default: tapstack); its control socket is "
                             "/run/tapstack/NAME.sock")
    parser.add_argument("-j", "--json", action="store_true", default=default_json,
                        help="machine-readable JSON output, like `ip -j`")


def build_parser() -> argparse.ArgumentParser:
    fmt = argparse.RawDescriptionHelpFormatter
    p = argparse.ArgumentParser(prog=PROG, description=DESCRIPTION, epilog=EPILOG, formatter_class=fmt)
    _common(p, top=True)
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    def add(name: str, help: str, description: str, examples: str) -> argparse.ArgumentParser:
        sp = sub.add_parser(name, help=help, description=_fmt(description), epilog="examples:\n" + examples,
                            formatter_class=fmt)
        _common(sp, top=False)
        return sp

    run = add("run", "run a stack in the foreground (root)", """
Create the configured TAP interfaces, set up their kernel side (namespace, addresses,
routes) with netlink, and run the stack until SIGINT/SIGTERM, then remove everything
that was created. Without -c the built-in default configuration is used: tap0 with
2001:db8:1::2/64 and 192.0.2.2/24, loopback 2001:db8:ff::1 and 198.51.100.1, the kernel
side in this namespace with 2001:db8:1::1/64 and 192.0.2.1/24, and the echo, discard,
daytime and chargen services.

When every interface is up and the control socket listens, one line is printed:
  tapstack: ready name=NAME control=/run/tapstack/NAME.sock
A bad configuration exits with status 2 before anything is created.""", """\
  sudo tapstack run
  sudo tapstack run -c lab.toml --name lab --log-level debug
  sudo tapstack run -c lab.toml --pcap /tmp/pcap     # then: tcpdump -nr /tmp/pcap/tap0.pcap
  sudo tapstack run --pcap /var/log/tapstack --pcap-size 16M --pcap-files 4
  sudo kill -HUP PID        # re-read -c FILE: [[route]], [services], [[forward]]""")
    run.add_argument("-c", "--config", metavar="FILE", help="TOML configuration file (default: built-in)")
    run.add_argument("--pcap", metavar="DIR", help="write DIR/<ifname>.pcap for every interface")
    run.add_argument("--pcap-size", metavar="SIZE", default="64M",
                     help="rotate a pcap file before it grows past SIZE bytes (suffix k, M or G; default 64M)")
    run.add_argument("--pcap-files", metavar="N", type=int, default=2,
                     help="pcap files kept per interface, the live one included: <if>.pcap, <if>.pcap.1, ... "
                          "(default 2)")
    run.add_argument("--log-level", metavar="LEVEL", default="info",
                     choices=["debug", "info", "warning", "error"],
                     help="debug, info (default), warning or error; logs go to stderr")

    add("addr", "show addresses and their state", """
Addresses per interface with scope and state (tentative, duplicated, preferred,
deprecated), as `ip addr`.""", "  tapstack addr\n  tapstack addr -j --name lab")

    rt = add("route", "show, query or change the routing table", """
  tapstack route [show]
  tapstack route get DST [from SRC]
  tapstack route add PREFIX via GW[%IF] [dev IF] [src ADDR] [metric N]
  tapstack route add PREFIX dev IF [src ADDR]
  tapstack route del PREFIX

`route get` prints the decision ip6_output would make:
  DST dev IFP origdev AIFP [via GW] src SRC gen N
PREFIX may be `default`. A link-local gateway needs %IF or dev.""", """\
  tapstack route
  tapstack route get 2001:db8:ff::1 from 2001:db8:1::2
  tapstack route add 203.0.113.0/24 via fe80::2%tap1 src 198.51.100.1
  tapstack route del 203.0.113.0/24""")
    rt.add_argument("words", nargs="*", metavar="ARG", help="show | get ... | add ... | del ...")

    ng = add("neigh", "show or flush the neighbor cache", """
  tapstack neigh [show]
  tapstack neigh flush [dev IF]

Lines are `ADDR dev IF lladdr MAC [router] STATE` as `ip neigh`; STATE is one of
INCOMPLETE REACHABLE STALE DELAY PROBE FAILED PERMANENT.""", "  tapstack neigh\n  tapstack neigh flush dev tap0")
    ng.add_argument("words", nargs="*", metavar="ARG", help="show | flush [dev IF]")

    add("stats", "show counters, every drop reason included", """
Protocol counters, drop reasons and per-interface link counters.""", "  tapstack stats\n  tapstack stats -j")
    add("sockets", "show open sockets, like ss", """
Open sockets of the stack with state and queue sizes, like `ss -tuna`.""", "  tapstack sockets")

    tr = add("trace", "stream IP output/input decisions", """
Print one line per IP output/input decision and neighbor state change until
interrupted (or N lines with -c):
  ip6_output ifp=lo origifp=tap0 src=... dst=... proto=tcp route=lookup gen=7
  nd state=INCOMPLETE->REACHABLE addr=fe80::2%tap1 lladdr=02:00:00:00:01:02 queued=1""",
               "  tapstack trace\n  tapstack trace -c 20 --name lab")
    tr.add_argument("-c", "--count", type=int, metavar="N", help="stop after N lines")

    pg = add("ping", "send echo requests from the stack itself", """
ICMPv6/ICMP echo requests sent by the stack, with iputils-style output. Exit status 0
if any reply arrived, 1 if none, 2 on error. DST may be ADDR%IF for link-local.""", """\
  tapstack ping -c 3 2001:db8:1::1
  tapstack ping -c 1 -W 2 fe80::1%tap0
  tapstack ping -I 198.51.100.1 203.0.113.2""")
    pg.add_argument("-c", "--count", type=int, metavar="N", default=None, help="stop after N replies (default: until ^C)")
    pg.add_argument("-i", "--interval", type=float, metavar="SEC", default=1.0, help="seconds between requests (default 1)")
    pg.add_argument("-s", "--size", type=int, metavar="SIZE", default=56, help="payload bytes (default 56)")
    pg.add_argument("-W", "--timeout", type=float, metavar="SEC", default=None, help="seconds to wait for a reply")
    pg.add_argument("-I", "--source", metavar="SRC", default=None, help="source address")
    pg.add_argument("dst", metavar="DST", help="destination address")

    cn = add("connect", "a TCP/UDP client inside the stack, like nc", """
Connect from the stack to DST PORT; stdin goes to the socket (half-close at EOF), the
socket to stdout. Exits 0 when the peer closes, 1 on error with the errno text
(`connect: No route to host`).""", """\
  echo hi | tapstack connect 2001:db8:1::2 7
  tapstack connect -w 5 -s 2001:db8:1::2 2001:db8:1::1 22
  echo hi | tapstack connect -u 192.0.2.1 7""")
    cn.add_argument("-u", "--udp", action="store_true", help="UDP instead of TCP")
    cn.add_argument("-s", "--source", metavar="SRC", default=None, help="source address")
    cn.add_argument("-w", "--wait", type=float, metavar="SEC", default=None,
                    help="bound the connect and any idle period")
    cn.add_argument("dst", metavar="DST", help="destination address (ADDR%%IF for link-local)")
    cn.add_argument("port", metavar="PORT", type=int, help="destination port")
    return p


# ---------------------------------------------------------------------------
# argument checks that argparse cannot do


def _port(v: int) -> int:
    if not 1 <= v <= 65535:
        raise UsageError(f"port {v} is out of range (1..65535)")
    return v


def _route_request(words: list[str]) -> tuple[str, dict[str, Any]]:
    if not words or words[0] in ("show", "list", "ls"):
        if len(words) > 1:
            raise UsageError("route show takes no arguments")
        return "route", {}
    verb, rest = words[0], words[1:]
    if verb == "get":
        if not rest:
            raise UsageError("route get needs a destination: route get DST [from SRC]")
        args: dict[str, Any] = {"dst": rest[0]}
        extra = _keywords(rest[1:], ("from",), "route get DST [from SRC]")
        if "from" in extra:
            args["from"] = extra["from"]
        return "route_get", args
    if verb == "add":
        if not rest:
            raise UsageError("route add needs a prefix: route add PREFIX via GW [dev IF] [src ADDR]")
        kw = _keywords(rest[1:], ("via", "dev", "src", "metric"), "route add PREFIX via GW [dev IF] [src ADDR]")
        if "via" not in kw and "dev" not in kw:
            raise UsageError("route add needs 'via GW' or 'dev IF'")
        args = {"prefix": rest[0], **kw}
        if "metric" in args:
            if not str(args["metric"]).isdigit():
                raise UsageError(f"metric {args['metric']!r} is not a number")
            args["metric"] = int(args["metric"])
        return "route_add", args
    if verb in ("del", "delete"):
        if len(rest) != 1:
            raise UsageError("route del takes one prefix: route del PREFIX")
        return "route_del", {"prefix": rest[0]}
    raise UsageError(f"unknown route command {verb!r} (show, get, add, del)")


def _keywords(words: list[str], allowed: tuple[str, ...], usage: str) -> dict[str, str]:
    out: dict[str, str] = {}
    i = 0
    while i < len(words):
        key = words[i]
        if key not in allowed:
            raise UsageError(f"unexpected {key!r}; usage: {usage}")
        if i + 1 >= len(words):
            raise UsageError(f"{key!r} needs a value; usage: {usage}")
        if key in out:
            raise UsageError(f"{key!r} given twice")
        out[key] = words[i + 1]
        i += 2
    return out


def _neigh_request(words: list[str]) -> tuple[str, dict[str, Any]]:
    if not words or words[0] in ("show", "list", "ls"):
        if len(words) > 1:
            raise UsageError("neigh show takes no arguments")
        return "neigh", {}
    if words[0] == "flush":
        kw = _keywords(words[1:], ("dev",), "neigh flush [dev IF]")
        return "neigh_flush", kw
    raise UsageError(f"unknown neigh command {words[0]!r} (show, flush)")


def request_for(ns: argparse.Namespace) -> tuple[str, dict[str, Any]]:
    """The control request a parsed command line sends."""
    cmd = ns.command
    if cmd == "route":
        return _route_request(ns.words)
    if cmd == "neigh":
        return _neigh_request(ns.words)
    if cmd == "trace":
        if ns.count is not None and ns.count < 1:
            raise UsageError("trace -c needs a positive count")
        return "trace", {"count": ns.count} if ns.count is not None else {}
    if cmd == "ping":
        if ns.count is not None and ns.count < 1:
            raise UsageError("ping -c needs a positive count")
        if ns.interval <= 0 or ns.interval > 3600:
            raise UsageError("ping -i needs 0 < SEC <= 3600")
        if not 0 <= ns.size <= 65507:
            raise UsageError("ping -s needs 0 <= SIZE <= 65507")
        if ns.timeout is not None and ns.timeout <= 0:
            raise UsageError("ping -W needs a positive number of seconds")
        return "ping", {"dst": ns.dst, "count": ns.count, "interval": ns.interval, "size": ns.size,
                        "timeout": ns.timeout, "source": ns.source}
    if cmd == "connect":
        if ns.wait is not None and ns.wait <= 0:
            raise UsageError("connect -w needs a positive number of seconds")
        return "connect", {"dst": ns.dst, "port": _port(ns.port), "udp": ns.udp, "source": ns.source,
                           "wait": ns.wait}
    return cmd, {}


# ---------------------------------------------------------------------------
# running


def err(text: str) -> None:
    print(f"{PROG}: {text}", file=sys.stderr, flush=True)


QUIET_ON_SUCCESS = {"route_add", "route_del", "neigh_flush"}    # as iproute2: silence is success


def _show(cmd: str, data: Any, as_json: bool) -> None:
    if cmd in QUIET_ON_SUCCESS and not as_json:
        return
    if as_json:
        print(json.dumps(data, indent=None if isinstance(data, list) else 2))
        return
    renderer = render.RENDERERS.get(cmd)
    if renderer is not None:
        text = renderer(data)
        if text:
            print(text)
    elif data not in (None, {}, []):
        print(json.dumps(data))


def _stream(client: ControlClient, cmd: str, args: dict[str, Any]) -> Any:
    """The objects of a streaming reply. The first ^C during ``ping`` half-closes the
    request instead of ending, so the daemon still sends the statistics (iputils prints
    them on SIGINT); a second ^C ends at once."""
    import signal
    import socket as _socket

    with client.connect(None) as c:
        c.send(cmd, args)
        old: Any = None
        if cmd == "ping" and threading.current_thread() is threading.main_thread():
            interrupts = 0

            def on_sigint(signum: int, frame: Any) -> None:
                nonlocal interrupts
                interrupts += 1
                if interrupts > 1:
                    raise KeyboardInterrupt
                with contextlib.suppress(OSError):
                    c.sock.shutdown(_socket.SHUT_WR)

            old = signal.signal(signal.SIGINT, on_sigint)
        try:
            while (obj := c.read_line()) is not None:
                yield obj
        finally:
            if old is not None:
                signal.signal(signal.SIGINT, old)


def _run_stream(client: ControlClient, cmd: str, args: dict[str, Any], as_json: bool) -> int:
    it = _stream(client, cmd, args)
    first = next(it, None)
    if first is None:
        raise ControlError("the daemon closed the connection without a reply")
    if not first.get("ok"):
        return _failed(first)
    for obj in it:
        if as_json:
            if isinstance(obj.get("line"), str):
                obj = {**render.stream_fields(cmd, obj["line"]), **obj}
            print(json.dumps(obj), flush=True)
            if "exit" in obj:
                return int(obj["exit"])
            continue
        if "line" in obj:
            print(obj["line"], flush=True)
        if "stderr" in obj:
            print(obj["stderr"], file=sys.stderr, flush=True)
        if "dropped" in obj:
            err(f"{obj['dropped']} lines dropped (client too slow)")
        if "exit" in obj or "error" in obj:
            if obj.get("error"):
                err(str(obj["error"]))
            return int(obj.get("exit", 2))
    if cmd == "trace":
        return 0
    raise ControlError("connection to the daemon lost")


def _run_connect(client: ControlClient, args: dict[str, Any]) -> int:
    with client.connect(None) as ctl:
        ctl.send("connect", args)
        first = ctl.read_line()
        if first is None:
            raise ControlError("the daemon closed the connection without a reply")
        if not first.get("ok"):
            return _failed(first)
        data = first.get("data") or {}
        token = data.get("pipe") if isinstance(data, dict) else None
        if not token:
            raise ControlError("the daemon did not open a data pipe")
        with client.connect(None) as pipe:
            pipe.send("pipe", {"token": token})
            pipe.reply()
            _pump(pipe)
        status = ctl.read_line()
    if status is None:
        err("connection to the daemon lost")
        return 1
    if status.get("error"):
        print(str(status["error"]), file=sys.stderr, flush=True)
    return int(status.get("exit", 1 if status.get("error") else 0))


def _failed(reply: dict[str, Any]) -> int:
    """An ``ok: false`` reply: the handler's own text and status when it gave one."""
    text = str(reply.get("error", "unknown error"))
    if "exit" in reply:
        print(text, file=sys.stderr, flush=True)
        return int(reply["exit"])
    err(text)
    return 2


def _pump(pipe: Any) -> None:
    """stdin -> pipe (half-close at EOF) in a thread; pipe -> stdout here until EOF."""
    import socket as _socket

    sock = pipe.sock
    out = sys.stdout.buffer

    def feed() -> None:
        try:
            while True:
                chunk = os.read(0, 65536)
                if not chunk:
                    break
                sock.sendall(chunk)
        except OSError:
            pass
        with contextlib.suppress(OSError):
            sock.shutdown(_socket.SHUT_WR)

    threading.Thread(target=feed, name="stdin", daemon=True).start()
    first = pipe.leftover()
    if first:
        out.write(first)
        out.flush()
    while True:
        try:
            chunk = sock.recv(65536)
        except OSError:
            break
        if not chunk:
            break
        out.write(chunk)
        out.flush()


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        ns = parser.parse_args(argv)
    except SystemExit as e:
        return int(e.code) if isinstance(e.code, int) else 2
    if ns.command is None:
        parser.print_help(sys.stderr)
        return 2
    if ns.command == "run":
        from stack.runtime.daemon import run_daemon
        return run_daemon(ns)
    try:
        cmd, args = request_for(ns)
    except UsageError as e:
        err(str(e))
        return 2
    client = ControlClient(ns.name or DEFAULT_NAME)
    try:
        if cmd in ("trace", "ping"):
            return _run_stream(client, cmd, args, ns.json)
        if cmd == "connect":
            return _run_connect(client, args)
        data = client.request(cmd, args)
        _show(cmd, data, ns.json)
        return 0
    except ControlError as e:
        err(str(e))
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
