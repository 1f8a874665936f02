"""The files that install tapstack elsewhere: the sample config loads, the systemd unit
verifies, the Vagrantfile validates (each check runs where its tool exists)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from stack.control.config import load_config

REPO = Path(__file__).resolve().parents[2]


def test_sample_config_loads_and_matches_the_unit() -> None:
    cfg = load_config(REPO / "scripts" / "tapstack.toml")
    assert cfg.name == "tapstack" and [i.name for i in cfg.interfaces] == ["tap0"]
    unit = (REPO / "scripts" / "tapstack.service").read_text()
    assert "ExecStart=/opt/tapstack/.venv/bin/tapstack run -c /etc/tapstack/tapstack.toml" in unit
    for line in ("Type=notify", "ExecReload=/bin/kill -HUP $MAINPID", "Restart=on-failure", "NoNewPrivileges=yes",
                 "ProtectSystem=strict", "ProtectHome=yes", "PrivateTmp=yes", "RuntimeDirectory=tapstack",
                 "CapabilityBoundingSet=CAP_NET_ADMIN CAP_NET_RAW CAP_SYS_ADMIN"):
        assert line in unit.splitlines(), line
    vagrantfile = (REPO / "Vagrantfile").read_text()
    assert 'config.vm.box = "debian/bookworm64"' in vagrantfile
    for path in ("scripts/tapstack.toml", "scripts/tapstack.service", "scripts/setup.sh"):
        assert path.removeprefix("scripts/") in vagrantfile, path


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed")
def test_unit_verifies(tmp_path: Path) -> None:
    unit = (REPO / "scripts" / "tapstack.service").read_text()
    # verify checks that ExecStart exists: point it at this checkout's tapstack
    here = Path(sys.executable).parent / "tapstack"
    (tmp_path / "tapstack.service").write_text(unit.replace("/opt/tapstack/.venv/bin/tapstack", str(here)))
    r = subprocess.run(["systemd-analyze", "verify", str(tmp_path / "tapstack.service")], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0 and "tapstack.service" not in r.stderr, r.stderr


@pytest.mark.skipif(shutil.which("vagrant") is None, reason="vagrant not installed")
def test_vagrantfile_validates() -> None:
    # --ignore-provider: the file is checked, not the machine (no VirtualBox or libvirt on CI)
    r = subprocess.run(["vagrant", "validate", "--ignore-provider"], cwd=REPO, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
