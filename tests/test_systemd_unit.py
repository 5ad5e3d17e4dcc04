"""The systemd unit: `.ci/check-systemd` (verify + security score) and its key settings."""

from __future__ import annotations

import configparser
import os
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
UNIT = REPO / "systemd" / "cobranca.service"
CHECK = REPO / ".ci" / "check-systemd"


def _need_systemd_analyze() -> None:
    if shutil.which("systemd-analyze") is None:
        if os.environ.get("CI") == "true":
            pytest.fail("CI=true requires systemd-analyze (apt-get install -y systemd)")
        pytest.skip("systemd-analyze is not installed (apt-get install -y systemd)")


def _unit() -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]  # keys are case-sensitive
    parser.read(UNIT, encoding="utf-8")
    return parser


def _all_values(section: str, key: str) -> list[str]:
    """Every value of a repeated key (configparser keeps only the last one)."""
    values: list[str] = []
    current = None
    for line in UNIT.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if line.startswith("[") and line.endswith("]"):
            current = line[1:-1]
        elif current == section and "=" in line and not line.startswith(("#", ";")):
            name, value = line.split("=", 1)
            if name.strip() == key:
                values.append(value.strip())
    return values


def test_check_systemd_passes() -> None:
    _need_systemd_analyze()
    result = subprocess.run([str(CHECK)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "security exposure:" in result.stdout


def test_check_systemd_fails_on_a_typo(tmp_path: Path) -> None:
    """verify only warns (exit 0) on an unknown key: the check must still fail."""
    _need_systemd_analyze()
    broken = tmp_path / "cobranca.service"
    broken.write_text(
        UNIT.read_text(encoding="utf-8").replace("ProtectSystem=strict", "ProtectSytem=strict"),
        encoding="utf-8",
    )
    result = subprocess.run([str(CHECK), str(broken)], capture_output=True, text=True, timeout=120)
    assert result.returncode != 0
    assert "ProtectSytem" in result.stderr


def test_check_systemd_fails_on_a_weak_unit(tmp_path: Path) -> None:
    _need_systemd_analyze()
    weak = tmp_path / "cobranca.service"
    weak.write_text(
        "[Unit]\nDescription=weak\n\n[Service]\nType=notify\n"
        "ExecStart=/opt/cobranca/venv/bin/cobranca daemon\n",
        encoding="utf-8",
    )
    result = subprocess.run([str(CHECK), str(weak)], capture_output=True, text=True, timeout=120)
    assert result.returncode != 0
    assert "security exposure" in result.stderr


def test_service_lifecycle() -> None:
    service = _unit()["Service"]
    assert service["Type"] == "notify"
    assert service["NotifyAccess"] == "main"
    assert service["ExecStart"] == (
        "/opt/cobranca/venv/bin/cobranca daemon --config /etc/cobranca/cobranca.yaml"
    )
    assert "-HUP" in service["ExecReload"] and "$MAINPID" in service["ExecReload"]
    assert service["Restart"] == "on-failure"
    assert service["RestartSec"] == "30"
    assert int(service["WatchdogSec"]) > 0
    assert int(service["TimeoutStopSec"]) >= 120
    assert "COBRANCA_CONFIG=/etc/cobranca/cobranca.yaml" in _all_values("Service", "Environment")


def test_credentials_and_directories() -> None:
    service = _unit()["Service"]
    credentials = _all_values("Service", "LoadCredential")
    names = {value.split(":", 1)[0] for value in credentials}
    assert {"smtp-password", "db-password"} <= names
    assert all(":/etc/cobranca/credentials/" in value for value in credentials)
    assert service["StateDirectory"] == "cobranca"
    assert service["ConfigurationDirectory"] == "cobranca"


def test_hardening() -> None:
    service = _unit()["Service"]
    assert service["ProtectSystem"] == "strict"
    assert service["NoNewPrivileges"] == "yes"
    assert service["CapabilityBoundingSet"] == ""
    assert service["AmbientCapabilities"] == ""
    assert service["ProtectHome"] == "yes"
    assert service["PrivateTmp"] == "yes"
    assert service["MemoryDenyWriteExecute"] == "yes"
    assert service["UMask"] == "0077"
    assert service.get("User") or service.get("DynamicUser") == "yes"
    assert set(service["RestrictAddressFamilies"].split()) == {"AF_INET", "AF_INET6", "AF_UNIX"}
