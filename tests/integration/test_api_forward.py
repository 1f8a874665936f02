"""[[forward]]: `ssh -p 2222` from the kernel side through the stack to an sshd on the
host's 127.0.0.1 (throwaway host and user keys in a temp dir; sshd stopped by PID)."""

from __future__ import annotations

import contextlib
import os
import select
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.conftest import ONE_TAP, Factory

pytestmark = [
    pytest.mark.netns,
    pytest.mark.skipif(not (shutil.which("sshd") or os.path.exists("/usr/sbin/sshd")) or not shutil.which("ssh")
                       or not shutil.which("ssh-keygen"), reason="openssh server/client not installed"),
]

SSHD = shutil.which("sshd") or "/usr/sbin/sshd"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def sshd(tmp_path: Path) -> Iterator[tuple[int, Path]]:
    """sshd -D on 127.0.0.1:PORT with keys in tmp_path; yields (port, user key)."""
    d = tmp_path / "ssh"
    d.mkdir(mode=0o700)
    for name in ("host_key", "user_key"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(d / name)], check=True)
    (d / "authorized_keys").write_text((d / "user_key.pub").read_text())
    port = free_port()
    (d / "sshd_config").write_text(f"""
Port {port}
ListenAddress 127.0.0.1
HostKey {d / "host_key"}
PidFile {d / "sshd.pid"}
AuthorizedKeysFile {d / "authorized_keys"}
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
UsePAM no
StrictModes no
""")
    made_privsep = False
    if not os.path.isdir("/run/sshd"):          # sshd insists on its privilege separation dir
        os.makedirs("/run/sshd", mode=0o755)
        made_privsep = True
    proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(d / "sshd_config")], stderr=subprocess.PIPE,
                            stdin=subprocess.DEVNULL)
    try:
        assert proc.stderr is not None
        log = b""
        deadline = time.monotonic() + 15
        while b"Server listening" not in log:
            left = deadline - time.monotonic()
            assert left > 0 and proc.poll() is None, f"sshd did not start: {log.decode(errors='replace')}"
            ready, _, _ = select.select([proc.stderr], [], [], left)
            if ready:
                chunk = os.read(proc.stderr.fileno(), 4096)
                assert chunk, f"sshd exited: {log.decode(errors='replace')}"
                log += chunk
        yield port, d / "user_key"
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
        if made_privsep:
            with contextlib.suppress(OSError):
                os.rmdir("/run/sshd")


def test_ssh_through_a_forward(tapstack_factory: Factory, sshd: tuple[int, Path]) -> None:
    port, key = sshd
    config = ONE_TAP + f"""
[[forward]]
listen = 2222
to = "127.0.0.1:{port}"
"""
    sp = tapstack_factory(config)
    ssh = ["timeout", "30", "ssh", "-p", "2222", "-i", str(key), "-o", "BatchMode=yes",
           "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR"]
    for host in ("2001:db8:1::2", "192.0.2.2"):
        r = sp.run_in_ns([*ssh, f"root@{host}", "echo", "logged-in-via", "$SSH_CONNECTION"], check=False)
        assert r.returncode == 0, r.stderr
        words = r.stdout.split()
        assert words[0] == "logged-in-via" and words[1] == "127.0.0.1", r.stdout    # sshd saw the relay
    # a bigger transfer both ways with half-close: stdin to the remote command and back
    blob = os.urandom(2 << 20).hex()
    r = sp.run_in_ns([*ssh, "root@2001:db8:1::2", "cat"], input=blob, check=False, timeout=60)
    assert r.returncode == 0 and r.stdout == blob
