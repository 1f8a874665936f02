"""The kernel side of each TAP, set up with pyroute2 (no ``ip`` commands).

``PeerSetup.setup(ifname, peer, mtu)`` runs after the TAP exists: it creates the
peer namespace when absent (and remembers that it did), moves the TAP's kernel side
into it (the name stays), writes ``net.ipv6.conf.<tap>.*`` sysctls inside that
namespace, sets the MTU, brings the link up, adds the peer addresses and routes.
Every change is recorded; ``cleanup()`` undoes them in reverse (routes, addresses,
then namespaces it created), also after a partial failure. The TAP itself goes away
when the daemon closes its fd.

All calls are synchronous. The daemon runs them before its event loop starts and
after it stops; ``wait_settled`` (kernel-side DAD) runs in an executor thread with
its own netlink sockets.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import ipaddress
import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from functools import partial
from typing import Any, TypeVar

from pyroute2 import IPRoute, NetlinkError, netns

from stack.control.config import IfAddress, PeerConfig, PeerRoute

log = logging.getLogger("tapstack.netlink")

NETNS_DIR = "/var/run/netns"
CLONE_NEWNET = 0x40000000
IFA_F_NODAD = 0x02
IFA_F_TENTATIVE = 0x40
IFA_F_DADFAILED = 0x08
T = TypeVar("T")


class PeerSetupError(Exception):
    """Setting up the kernel side failed; the message is meant for users."""


class _NamespaceGone(Exception):
    """The namespace an undo step would run in no longer exists."""


def _strerror(e: BaseException) -> str:
    code = getattr(e, "code", None) or getattr(e, "errno", None)
    if isinstance(code, int) and code > 0:
        return os.strerror(code)
    return str(e)


def run_in_netns(ns: str | None, fn: Callable[[], T]) -> T:
    """Run ``fn`` in a short-lived thread that has joined namespace ``ns``.

    Used for /proc/sys/net, which shows the calling thread's namespace.
    """
    if ns is None:
        return fn()
    box: dict[str, Any] = {}

    def run() -> None:
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            fd = os.open(os.path.join(NETNS_DIR, ns), os.O_RDONLY | os.O_CLOEXEC)
            try:
                if libc.setns(fd, CLONE_NEWNET) != 0:
                    err = ctypes.get_errno()
                    raise OSError(err, f"setns({ns}): {os.strerror(err)}")
            finally:
                os.close(fd)
            box["value"] = fn()
        except BaseException as e:  # handed to the caller
            box["error"] = e

    t = threading.Thread(target=run, name=f"netns-{ns}")
    t.start()
    t.join()
    if "error" in box:
        raise box["error"]
    return box["value"]  # type: ignore[no-any-return]


MS_REC = 0x4000
MS_BIND = 0x1000
MS_SHARED = 1 << 20


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def _check(rc: int, what: str) -> None:
    if rc != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def create_namespace(name: str) -> None:
    """``ip netns add NAME`` without forking: a helper thread unshares its network
    namespace and bind-mounts it on /run/netns/NAME (iproute2's layout).

    Forking helpers are avoided on purpose: a forked copy of the daemon shares the
    event loop's signal wakeup fd and inherits its signal handlers.
    """
    directory = NETNS_DIR
    path = os.path.join(directory, name)
    os.makedirs(directory, exist_ok=True)

    def run() -> None:
        libc = _libc()
        d = directory.encode()
        # Make the run directory a shared mount point, as iproute2 does.
        if libc.mount(b"", d, b"none", MS_SHARED | MS_REC, None) != 0:
            _check(libc.mount(d, d, b"none", MS_BIND | MS_REC, None), f"bind mount {directory}")
            _check(libc.mount(b"", d, b"none", MS_SHARED | MS_REC, None), f"share {directory}")
        os.close(os.open(path, os.O_RDONLY | os.O_CREAT | os.O_EXCL, 0))
        try:
            _check(libc.unshare(CLONE_NEWNET), "unshare")
            _check(libc.mount(b"/proc/thread-self/ns/net", path.encode(), b"none", MS_BIND, None),
                   f"mount {path}")
        except OSError:
            with contextlib.suppress(OSError):
                os.unlink(path)
            raise

    box: dict[str, BaseException] = {}

    def guarded() -> None:
        try:
            run()
        except BaseException as e:
            box["error"] = e

    t = threading.Thread(target=guarded, name=f"netns-create-{name}")
    t.start()
    t.join()
    if "error" in box:
        raise box["error"]


def open_rtnl(ns: str | None) -> IPRoute:
    """An rtnetlink socket in namespace ``ns`` (socket made by a setns thread, no fork)."""
    if ns is None:
        return IPRoute()
    sock = run_in_netns(ns, lambda: socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, 0))
    return IPRoute(use_socket=sock)


def write_sysctl(ns: str | None, ifname: str, key: str, value: int) -> None:
    path = f"/proc/sys/net/ipv6/conf/{ifname}/{key}"

    def write() -> None:
        with open(path, "w") as f:
            f.write(f"{value}\n")

    try:
        run_in_netns(ns, write)
    except FileNotFoundError:
        raise PeerSetupError(f"{ifname}: no sysctl net.ipv6.conf.{ifname}.{key}") from None
    except OSError as e:
        raise PeerSetupError(f"{ifname}: sysctl net.ipv6.conf.{ifname}.{key}={value}: {_strerror(e)}") from None


def namespace_exists(name: str) -> bool:
    return os.path.exists(os.path.join(NETNS_DIR, name))


def _route_args(r: PeerRoute, index: int) -> dict[str, Any]:
    args: dict[str, Any] = {"dst": str(r.dst), "oif": index}
    if r.via is not None:
        if r.via.version == r.dst.version:
            args["gateway"] = str(r.via)
        else:  # IPv4 via an IPv6 next hop (RFC 5549): RTA_VIA
            args["via"] = {"family": socket.AF_INET6, "addr": str(r.via)}
    if r.src is not None:
        args["prefsrc"] = str(r.src)
    if r.metric is not None:
        args["priority"] = r.metric
    return args


class PeerSetup:
    """Kernel-side configuration of the TAPs, with an undo log."""

    def __init__(self) -> None:
        self._undo: list[tuple[str, Callable[[], None]]] = []
        self._sockets: dict[str | None, IPRoute] = {}
        self.created_namespaces: list[str] = []
        self._settle: list[tuple[str | None, str]] = []   # (netns, ifname) whose DAD to await
        self._cancel = threading.Event()

    # -- sockets ------------------------------------------------------------

    def _ipr(self, ns: str | None) -> IPRoute:
        ipr = self._sockets.get(ns)
        if ipr is None:
            ipr = self._sockets[ns] = open_rtnl(ns)
        return ipr

    def _rtnl(self, ns: str | None, method: str, *args: Any, **kw: Any) -> None:
        """One rtnetlink call in ``ns`` on a socket opened when needed (undo entries use
        this: no socket stays open between setup and cleanup, so none pins a namespace
        that ``ip netns del`` removes meanwhile)."""
        if ns is not None and not namespace_exists(ns):
            raise _NamespaceGone(ns)
        getattr(self._ipr(ns), method)(*args, **kw)

    def _close_sockets(self) -> None:
        for ipr in self._sockets.values():
            with contextlib.suppress(Exception):
                ipr.close()
        self._sockets.clear()

    def _index(self, ns: str | None, ifname: str) -> int:
        found = self._ipr(ns).link_lookup(ifname=ifname)
        if not found:
            where = f" in namespace {ns}" if ns else ""
            raise PeerSetupError(f"no interface {ifname}{where}")
        return int(found[0])

    # -- preflight ------------------------------------------------------------

    def preflight(self, peers: list[tuple[str, PeerConfig]]) -> None:
        """Refuse, before anything is created, kernel-side addresses that would collide
        with what the target namespace already uses.

        A peer address whose prefix overlaps an address of another interface in the
        same namespace would capture that interface's traffic (on a test VM whose own
        link uses 192.0.2.0/24, putting 192.0.2.1/24 on tap0 makes the VM's default
        gateway a local address). Link-local addresses are zoned and never collide;
        namespaces that do not exist yet are empty. Raises PeerSetupError naming both
        interfaces and the way out.
        """
        by_ns: dict[str | None, list[tuple[str, IfAddress]]] = {}
        for ifname, peer in peers:
            for a in peer.addresses:
                if not a.address.is_link_local:
                    by_ns.setdefault(peer.netns, []).append((ifname, a))
        ours = {ifname for ifname, _ in peers}
        try:
            for ns, wanted in by_ns.items():
                if ns is not None and not namespace_exists(ns):
                    continue
                existing = self._namespace_addresses(ns, ours)
                for ifname, a in wanted:
                    mine = ipaddress.ip_interface(f"{a.address}/{a.prefixlen}").network
                    for dev, other in existing:
                        if other.version == mine.version and other.network.overlaps(mine):
                            where = f"namespace {ns}" if ns else "this namespace"
                            raise PeerSetupError(
                                f"{ifname}: peer address {a.address}/{a.prefixlen} overlaps {other} on {dev} "
                                f"in {where}; give [interface.peer] a netns (or run the daemon under "
                                f"`ip netns exec NAME`) so the kernel side lives in its own namespace")
        except NetlinkError as e:
            raise PeerSetupError(f"reading addresses for the preflight check: {_strerror(e)}") from None
        finally:
            self._close_sockets()

    def _namespace_addresses(self, ns: str | None,
                             skip: set[str]) -> list[tuple[str, ipaddress.IPv4Interface | ipaddress.IPv6Interface]]:
        ipr = self._ipr(ns)
        names = {int(link["index"]): str(link.get_attr("IFLA_IFNAME")) for link in ipr.get_links()}
        found: list[tuple[str, ipaddress.IPv4Interface | ipaddress.IPv6Interface]] = []
        for msg in ipr.get_addr():
            dev = names.get(int(msg["index"]), f"if{msg['index']}")
            addr = msg.get_attr("IFA_ADDRESS") or msg.get_attr("IFA_LOCAL")
            if dev in skip or addr is None:
                continue
            iface = ipaddress.ip_interface(f"{addr}/{msg['prefixlen']}")
            if not iface.ip.is_link_local:
                found.append((dev, iface))
        return found

    # -- setup ----------------------------------------------------------------

    def ensure_namespace(self, name: str) -> None:
        if namespace_exists(name):
            return
        try:
            create_namespace(name)
        except Exception as e:
            raise PeerSetupError(f"cannot create network namespace {name}: {_strerror(e)}") from None
        self.created_namespaces.append(name)
        log.info("created network namespace %s", name)

    def setup(self, ifname: str, peer: PeerConfig, mtu: int) -> None:
        """Configure the kernel side of TAP ``ifname`` (which must exist in our namespace)."""
        ns = peer.netns
        try:
            if ns is not None:
                self.ensure_namespace(ns)
                host = self._ipr(None)
                index = self._index(None, ifname)
                fd = os.open(os.path.join(NETNS_DIR, ns), os.O_RDONLY | os.O_CLOEXEC)
                try:
                    host.link("set", index=index, net_ns_fd=fd)
                finally:
                    os.close(fd)
            ipr = self._ipr(ns)
            index = self._index(ns, ifname)
            sysctl = dict(peer.sysctl)
            if peer.nodad:
                sysctl.setdefault("accept_dad", 0)
            for key, value in sysctl.items():
                write_sysctl(ns, ifname, key, value)
            ipr.link("set", index=index, mtu=peer.mtu or mtu)
            ipr.link("set", index=index, state="up")
            for a in peer.addresses:
                kw: dict[str, Any] = {"index": index, "address": str(a.address), "prefixlen": a.prefixlen}
                if a.version == 6 and peer.nodad:
                    kw["flags"] = IFA_F_NODAD
                self._do(f"{ifname}: peer address {a}", partial(ipr.addr, "add", **kw))
                self._undo.append((f"{ifname}: address {a}", partial(self._rtnl, ns, "addr", "del", **kw)))
            for r in peer.routes:
                oif = index if r.dev is None else self._index(ns, r.dev)
                args = _route_args(r, oif)
                self._do(f"{ifname}: peer route {r.text!r}", partial(ipr.route, "add", **args))
                self._undo.append((f"{ifname}: route {r.text}", partial(self._rtnl, ns, "route", "del", **args)))
            if not (peer.nodad or sysctl.get("accept_dad", 1) == 0):
                self._settle.append((ns, ifname))
            log.info("%s: kernel side up%s", ifname, f" in namespace {ns}" if ns else "")
        except PeerSetupError:
            raise
        except NetlinkError as e:
            raise PeerSetupError(f"{ifname}: kernel side: {_strerror(e)}") from None
        finally:
            # A netlink socket holds its namespace alive: keep none open while running.
            self._close_sockets()

    def _do(self, what: str, fn: Callable[[], object]) -> None:
        try:
            fn()
        except NetlinkError as e:
            if e.code == errno.EEXIST:
                raise PeerSetupError(f"{what}: already exists") from None
            raise PeerSetupError(f"{what}: {_strerror(e)}") from None

    # -- readiness -----------------------------------------------------------

    def wait_settled(self, timeout: float = 10.0) -> list[str]:
        """Wait until no kernel-side IPv6 address on our TAPs is tentative.

        Runs in a worker thread. Each namespace is polled from a short-lived thread
        that joined it with setns (no fork: a forked helper would share the event
        loop's signal wakeup fd). Returns what is still tentative at the timeout.
        """
        deadline = time.monotonic() + timeout
        by_ns: dict[str | None, list[str]] = {}
        for ns, ifname in self._settle:
            by_ns.setdefault(ns, []).append(ifname)
        left: list[str] = []
        for ns, names in by_ns.items():
            left += run_in_netns(ns, partial(self._poll_settled, names, deadline))
        return left

    def _poll_settled(self, names: list[str], deadline: float) -> list[str]:
        pending = list(names)
        # The socket is made here, inside the namespace thread, so it belongs to that namespace.
        with IPRoute(use_socket=socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, 0)) as ipr:
            while pending:
                pending = [n for n in pending if self._tentative(ipr, n)]
                if not pending or time.monotonic() >= deadline:
                    break
                if self._cancel.wait(0.05):
                    break
        return pending

    @staticmethod
    def _tentative(ipr: IPRoute, ifname: str) -> bool:
        found = ipr.link_lookup(ifname=ifname)
        if not found:
            return False
        have_ll = False
        for msg in ipr.get_addr(family=socket.AF_INET6, index=found[0]):
            flags = msg.get_attr("IFA_FLAGS") or msg["flags"]
            addr = msg.get_attr("IFA_ADDRESS") or ""
            have_ll = have_ll or addr.startswith("fe80:")
            if flags & IFA_F_TENTATIVE and not flags & IFA_F_DADFAILED:
                return True
        return not have_ll      # the link-local appears shortly after link up

    def cancel_wait(self) -> None:
        """Make a running ``wait_settled`` return at once."""
        self._cancel.set()

    # -- cleanup ---------------------------------------------------------------

    def cleanup(self) -> list[str]:
        """Undo routes and addresses in reverse order; returns the problems (already logged).

        Close the TAPs after this, then call ``remove_namespaces()``.
        """
        problems: list[str] = []
        while self._undo:
            what, fn = self._undo.pop()
            try:
                fn()
            except _NamespaceGone:
                continue                # removed under us (ip netns del), with all it held
            except NetlinkError as e:
                if e.code in (errno.ENODEV, errno.ESRCH, errno.EADDRNOTAVAIL, errno.ENOENT):
                    continue            # went with the TAP already
                problems.append(f"{what}: {_strerror(e)}")
            except Exception as e:
                problems.append(f"{what}: {_strerror(e)}")
        self._close_sockets()
        for p in problems:
            log.warning("cleanup: %s", p)
        return problems

    def remove_namespaces(self) -> list[str]:
        """Remove the namespaces this object created (after the TAPs are closed)."""
        self._close_sockets()           # our netlink sockets pin the namespaces
        problems: list[str] = []
        while self.created_namespaces:
            name = self.created_namespaces.pop()
            if not namespace_exists(name):
                log.info("network namespace %s was already removed", name)
                continue
            try:
                netns.remove(name)
                log.info("removed network namespace %s", name)
            except Exception as e:
                problems.append(f"namespace {name}: {_strerror(e)}")
                log.warning("cleanup: namespace %s: %s", name, _strerror(e))
        return problems

    def close(self) -> None:
        self._close_sockets()
