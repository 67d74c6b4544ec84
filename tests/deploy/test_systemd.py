"""deploy/systemd/greenlight.service: `systemd-analyze verify` accepts it (on a root holding the
unit and an executable where ExecStart points, and nothing else of this machine's), `systemd-analyze
security` scores it "OK" or better, the settings the service depends on are there, and every
system call and socket family greenlight uses through a whole approval is one the unit allows."""

from __future__ import annotations

import os
import re
import secrets
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path

import pytest
from conftest import (
    REPO,
    Child,
    default_shutdown_timeout_seconds,
    duration_seconds,
    e2e,
    free_port,
    http,
    wait_for,
    wait_listening,
)

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


def syscall_groups() -> dict[str, set[str]]:
    """systemd's system call groups (@system-service, ...), each expanded to system call names."""
    listing = subprocess.run([analyze(), "syscall-filter", "--no-pager"], capture_output=True, text=True, check=True)
    groups: dict[str, list[str]] = {}
    current = None
    for line in listing.stdout.splitlines():
        word = line.strip()
        if not word or word.startswith("#"):
            continue
        if not line.startswith(" ") and word.startswith("@"):
            current = groups.setdefault(word, [])
        elif current is not None:
            current.append(word)

    def expand(name: str, seen: set[str]) -> set[str]:
        out = set()
        for item in groups.get(name, []):
            if item.startswith("@"):
                if item not in seen:
                    seen.add(item)
                    out |= expand(item, seen)
            else:
                out.add(item)
        return out

    return {name: expand(name, {name}) for name in groups}


def allowed_syscalls() -> set[str]:
    """What the unit's SystemCallFilter= lines allow, read in order (an allow list, then `~` denials)."""
    groups = syscall_groups()
    allowed: set[str] = set()
    for value in settings()["SystemCallFilter"]:
        deny = value.startswith("~")
        names = set()
        for item in value.removeprefix("~").split():
            names |= groups[item] if item.startswith("@") else {item}
        allowed = allowed - names if deny else allowed | names
    return allowed


def test_an_approval_uses_only_system_calls_and_sockets_the_unit_allows(request, tmp_path):
    # greenlight dev under strace, as an unprivileged user like the unit's dynamic one (as root,
    # SQLite also chowns the files it creates): a request is made, posted to the sandbox,
    # approved with a click and long-polled, and the process is stopped with SIGTERM.
    strace = shutil.which("strace")
    if not strace:
        pytest.fail("strace not found (apt-get install strace)", pytrace=False)
    binary = str(e2e.greenlight_bin())
    state = Path(tempfile.mkdtemp(prefix="greenlight-unit-"))  # /var/lib/greenlight's stand-in
    os.chown(state, 65532, 65532)
    api, page = free_port(), free_port()
    key = "gl_" + secrets.token_hex(32)
    trace = tmp_path / "strace.txt"
    env = e2e.hermetic_env(
        GREENLIGHT_LISTEN=f"127.0.0.1:{api}",
        GREENLIGHT_SANDBOX_LISTEN=f"127.0.0.1:{page}",
        GREENLIGHT_DATABASE_URL=f"sqlite:{state / 'greenlight.db'}",
        GREENLIGHT_TOKEN=key,
    )
    unprivileged = ["setpriv", "--reuid=65532", "--regid=65532", "--clear-groups"]
    log_path = tmp_path / "dev.log"
    with open(log_path, "wb") as log:
        popen = subprocess.Popen(
            [strace, "-f", "-qq", "-o", str(trace), *unprivileged, binary, "dev"],
            cwd=state, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
        )
    child = Child("greenlight dev (under strace)", popen, log_path)
    request.node.e2e_children = [child]
    try:
        wait_listening(child, f"http://127.0.0.1:{api}/readyz")
        auth = {"Authorization": f"Bearer {key}"}
        r = http("POST", f"http://127.0.0.1:{api}/v1/requests", {"title": "Deploy api v1.2"}, auth)
        assert r.status == 201, r.body
        request_id = r.json()["id"]

        def posted():
            found = http("GET", f"http://127.0.0.1:{api}/v1/requests/{request_id}", headers=auth).json()
            return (found["slack"] or {}).get("ts")

        click = {"channel": "C0DEPLOY", "message_ts": wait_for("the message", posted)}
        click |= {"action_id": "greenlight.approve", "user": "U0BOB"}
        assert http("POST", f"http://127.0.0.1:{page}/_sandbox/click", click).status == 200
        decided = http("GET", f"http://127.0.0.1:{api}/v1/requests/{request_id}?wait=20", headers=auth).json()
        assert decided["status"] == "approved", decided
    finally:
        # SIGTERM to greenlight itself (strace's child); strace ends with it.
        for pid in Path(f"/proc/{popen.pid}/task/{popen.pid}/children").read_text().split():
            os.kill(int(pid), signal.SIGTERM)
        popen.wait(timeout=30)
        shutil.rmtree(state)
    assert child.popen.returncode == 0, child.log()

    # What greenlight called: the trace from its execve on (setpriv's own calls come before).
    lines = trace.read_text().splitlines()
    start = next(n for n, line in enumerate(lines) if f'execve("{binary}"' in line and "= 0" in line)
    calls, families = set(), set()
    for line in lines[start:]:
        found = re.match(r"^\d+\s+([a-z0-9_]+)\((.*)", line)
        if found:
            calls.add(found.group(1))
            if found.group(1) in ("socket", "socketpair"):
                families.add(found.group(2).split(",")[0])
    assert {"accept4", "fdatasync", "getrandom", "connect"} <= calls, sorted(calls)  # the trace is whole
    allowed = allowed_syscalls()
    assert calls <= allowed, f"system calls the unit's SystemCallFilter refuses: {sorted(calls - allowed)}"
    permitted = set(settings()["RestrictAddressFamilies"][0].split())
    assert families <= permitted, f"socket families the unit refuses: {sorted(families - permitted)}"
