"""deploy/systemd/greenlight.service: `systemd-analyze verify` accepts it (on a root holding the
unit and an executable where ExecStart points, and nothing else of this machine's), `systemd-analyze
security` scores it "OK" or better, and the settings the service depends on are there."""

from __future__ import annotations

import os
import re
import shutil
import subprocess

import pytest
from conftest import REPO, default_shutdown_timeout_seconds, duration_seconds

UNIT = REPO / "deploy" / "systemd" / "greenlight.service"
# systemd-analyze's own scale: below 0.1 "PERFECT", below 1 "SAFE", below 4 "OK", below 7 "MEDIUM",
# then "EXPOSED" and "UNSAFE". What is left here is the network (Slack, PostgreSQL, callbacks).
EXPOSURE_BOUND = 2.0


def analyze() -> str:
    path = shutil.which("systemd-analyze")
    if not path:
        pytest.fail("systemd-analyze not found (apt-get install systemd)", pytrace=False)
    return path


def settings() -> dict[str, list[str]]:
    """The unit's Key=value lines (every value of a repeated key, in order)."""
    out: dict[str, list[str]] = {}
    for line in UNIT.read_text().splitlines():
        if "=" in line and not line.startswith(("#", ";", "[")):
            key, value = line.split("=", 1)
            out.setdefault(key.strip(), []).append(value.strip())
    return out


def test_systemd_analyze_verify_accepts_the_unit(tmp_path):
    # A root of its own: the unit where it is installed, the binary its ExecStart names, and
    # systemd's own units (verify starts from sysinit.target), so nothing else here is read.
    root = tmp_path / "root"
    shutil.copytree("/usr/lib/systemd/system", root / "usr/lib/systemd/system", symlinks=True)
    (root / "etc/systemd/system").mkdir(parents=True)
    shutil.copy(UNIT, root / "etc/systemd/system/greenlight.service")
    exec_start = settings()["ExecStart"][0].split()[0]
    binary = root / exec_start.lstrip("/")
    binary.parent.mkdir(parents=True)
    # Any executable will do: verify checks that ExecStart names one.
    binary.write_text("#!/bin/sh\nexit 0\n")
    binary.chmod(0o755)
    done = subprocess.run(
        [analyze(), "verify", f"--root={root}", "greenlight.service"],
        capture_output=True, text=True, timeout=60, env={**os.environ, "SYSTEMD_LOG_LEVEL": "notice"},
    )
    # verify exits 0 on a setting it ignores ("Failed to parse ..., ignoring"); nothing may be said.
    assert done.returncode == 0 and done.stdout + done.stderr == "", done.stdout + done.stderr


def test_systemd_analyze_security_rates_it_ok(capsys):
    done = subprocess.run(
        [analyze(), "security", "--offline=true", "--no-pager", str(UNIT)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    found = re.search(r"Overall exposure level for greenlight\.service: ([0-9.]+) (\w+)", done.stdout)
    assert found, done.stdout
    exposure, verdict = float(found.group(1)), found.group(2)
    with capsys.disabled():
        print(f"\nsystemd-analyze security greenlight.service: {exposure} {verdict}")
    assert exposure <= EXPOSURE_BOUND and verdict in ("OK", "SAFE", "PERFECT"), done.stdout


def test_one_process_on_sqlite_hardened_restarted_and_given_time_to_drain():
    s = settings()
    assert s["ExecStart"] == ["/usr/local/bin/greenlight serve"]
    assert s["DynamicUser"] == ["yes"]
    assert s["StateDirectory"] == ["greenlight"]
    env = dict(v.split("=", 1) for v in s["Environment"])
    assert env["GREENLIGHT_DATABASE_URL"] == "sqlite:/var/lib/greenlight/greenlight.db"  # the StateDirectory
    assert s["EnvironmentFile"] == ["/etc/greenlight/greenlight.env"]
    assert s["Restart"] == ["on-failure"]
    assert duration_seconds(s["TimeoutStopSec"][0]) > default_shutdown_timeout_seconds()
    for key, value in {
        "ProtectSystem": "strict",
        "NoNewPrivileges": "yes",
        "PrivateTmp": "yes",
        "CapabilityBoundingSet": "",
    }.items():
        assert s[key] == [value], key
    assert "@system-service" in s["SystemCallFilter"]
