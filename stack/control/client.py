"""Client side of the control socket (blocking; the CLI needs nothing more).

``ControlClient(name).request(cmd, args)`` returns the reply's data or raises
``ControlError``; ``stream(cmd, args)`` yields the object lines of a streaming
command; ``pipe(token)`` opens the raw data connection of a ``connect``.
"""

from __future__ import annotations

import errno
import json
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from stack.control.server import socket_path


class ControlError(Exception):
    """The daemon answered ``ok: false`` (or the connection failed)."""


class NotRunning(ControlError):
    pass


class Connection:
    """One request on one socket connection."""

    def __init__(self, path: Path, name: str, timeout: float | None = None) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        try:
            self.sock.connect(str(path))
        except FileNotFoundError:
            self.sock.close()
            raise NotRunning(f"no stack named {name!r} is running (no {path})") from None
        except ConnectionRefusedError:
            self.sock.close()
            raise NotRunning(f"no stack named {name!r} is running ({path} is stale)") from None
        except PermissionError:
            self.sock.close()
            raise ControlError(f"cannot connect to {path}: permission denied (run as root)") from None
        except OSError as e:
            self.sock.close()
            raise ControlError(f"cannot connect to {path}: {e.strerror or e}") from None
        self._buf = b""

    def send(self, cmd: str, args: dict[str, Any] | None = None) -> None:
        line = json.dumps({"cmd": cmd, "args": args or {}}) + "\n"
        try:
            self.sock.sendall(line.encode())
        except TimeoutError:
            raise ControlError("the daemon did not accept the request (timed out)") from None
        except OSError as e:
            raise ControlError(f"lost the connection to the daemon: {e.strerror or e}") from None

    def read_line(self) -> dict[str, Any] | None:
        """The next JSON object line, None at EOF."""
        while b"\n" not in self._buf:
            try:
                chunk = self.sock.recv(65536)
            except ConnectionResetError:
                chunk = b""
            except TimeoutError:
                raise ControlError("the daemon did not answer in time") from None
            except OSError as e:
                raise ControlError(f"lost the connection to the daemon: {e.strerror or e}") from None
            if not chunk:
                if self._buf.strip():
                    raise ControlError("the daemon sent a truncated reply")
                return None
            self._buf += chunk
        line, self._buf = self._buf.split(b"\n", 1)
        try:
            obj = json.loads(line)
        except ValueError:
            raise ControlError("the daemon sent a malformed reply") from None
        if not isinstance(obj, dict):
            raise ControlError("the daemon sent a malformed reply")
        return obj

    def reply(self) -> Any:
        obj = self.read_line()
        if obj is None:
            raise ControlError("the daemon closed the connection without a reply")
        if not obj.get("ok"):
            raise ControlError(str(obj.get("error", "unknown error")))
        return obj.get("data")

    def leftover(self) -> bytes:
        data, self._buf = self._buf, b""
        return data

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> Connection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class ControlClient:
    def __init__(self, name: str, path: str | Path | None = None, timeout: float | None = 30.0) -> None:
        self.name = name
        self.path = Path(path) if path is not None else socket_path(name)
        self.timeout = timeout

    def connect(self, timeout: float | None = None) -> Connection:
        return Connection(self.path, self.name, timeout)

    def request(self, cmd: str, args: dict[str, Any] | None = None) -> Any:
        with self.connect(self.timeout) as c:
            c.send(cmd, args)
            return c.reply()

    def stream(self, cmd: str, args: dict[str, Any] | None = None) -> Iterator[dict[str, Any]]:
        """Yields ``{"ok": ..., "data": ...}`` first, then each streamed object."""
        with self.connect(None) as c:
            c.send(cmd, args)
            while True:
                obj = c.read_line()
                if obj is None:
                    return
                yield obj

    def alive(self) -> bool:
        """True when a daemon answers on the socket."""
        try:
            with Connection(self.path, self.name, 2.0):
                return True
        except ControlError:
            return False
        except OSError as e:
            return e.errno not in (errno.ECONNREFUSED, errno.ENOENT)
