"""The README's quick start, run as a new user would paste it: the fenced shell commands of its
"Quick start" section are read from README.md (not copied here) and run in bash from the
repository root, on the default ports the README names. The click is made in a real browser on
the sandbox page, as the README says. If the README and the product part ways, this fails."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import time

import pytest

from conftest import REPO, Child, DevProcess, hermetic_env, wait_for, wait_listening
from test_browser import APPROVE, act_as, click, message, message_showing, open_page, until

# `cargo install` writes into the user's ~/.cargo/bin and resolves dependencies afresh: it is
# the one quick-start command this test leaves to people.
NOT_RUN = ("cargo install ",)
PLACEHOLDER = "<the key it printed>"
EXPORT = re.compile(r"^\s*export GREENLIGHT_URL=(\S+) GREENLIGHT_TOKEN=(gl_[0-9a-f]+)\s*$", re.M)


def quick_start() -> tuple[str, list[str]]:
    """The Quick start section's prose and its ```sh blocks, in order."""
    text = (REPO / "README.md").read_text()
    start = text.index("\n## Quick start")
    end = text.find("\n## ", start + 1)
    section = text[start : end if end != -1 else len(text)]
    blocks = [b.strip() for b in re.findall(r"```sh\n(.*?)```", section, re.S)]
    return section, [b for b in blocks if not b.startswith(NOT_RUN)]


def port_free(port: int) -> bool:
    with socket.socket() as s:
        # As the server binds: connections lingering in TIME_WAIT do not make a port busy.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def bash(script: str, env: dict, log) -> subprocess.Popen:
    return subprocess.Popen(
        ["bash", "-euo", "pipefail", "-c", script],
        cwd=REPO,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=log,
        text=True,
        # Its own process group, so that a stop reaches whatever bash and cargo started.
        start_new_session=True,
    )


def stop(proc: subprocess.Popen) -> None:
    """What Ctrl-C does in a terminal: the signal to the whole group (here SIGTERM)."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)


@pytest.mark.timeout(1500)
def test_the_quick_start_works_as_written(request, tmp_path, browser):
    section, blocks = quick_start()
    assert len(blocks) >= 3, f"expected dev, ask and curl blocks in the Quick start:\n{blocks}"
    dev_block, ask_block, curl_block = blocks[0], blocks[1], blocks[2]
    assert dev_block == "cargo run --release -- dev", dev_block
    assert PLACEHOLDER in ask_block, ask_block
    for port in (8080, 8090):
        assert port_free(port), f"port {port} is taken: the quick start uses the default ports"

    # A fresh database, so that an earlier greenlight.db in the checkout changes nothing.
    db = tmp_path / "greenlight.db"
    env = hermetic_env(GREENLIGHT_DATABASE_URL=f"sqlite:{db}")
    log_path = tmp_path / "dev.log"
    log = open(log_path, "w")
    dev_proc = bash(dev_block, env, log)
    child = Child("quick start: " + dev_block, dev_proc, log_path)
    request.node.e2e_children = [child]
    banner: list[str] = []

    # The first build can take minutes; scripts/test builds the release binary beforehand.
    def printed_export():
        child.assert_running()
        line = dev_proc.stdout.readline()
        banner.append(line)
        found = EXPORT.match(line)
        return found.groups() if found else None

    try:
        url, key = wait_for("`dev` to print the export line", printed_export, timeout=1200, every=0)
        dev = DevProcess(child=child, api=url, page="http://127.0.0.1:8090", key=key)
        wait_listening(child, f"{url}/readyz")
        # The README's export is what dev printed, but for the key.
        readme_export = next(line for line in ask_block.splitlines() if line.startswith("export "))
        assert readme_export.replace(PLACEHOLDER, key) == "".join(banner).splitlines()[-1].strip()
        assert "http://127.0.0.1:8090/" in "".join(banner) and "http://127.0.0.1:8090/" in section

        open_page(browser, dev)
        ask_log = open(tmp_path / "ask.log", "w")
        ask = bash(ask_block.replace(PLACEHOLDER, key), env, ask_log)
        ts, shown = message_showing(browser, "Deploy api v1.2")
        assert "Approve" in shown
        # "Pick a user in "Acting as" (bob, say) and click Approve".
        act_as(browser, "U0BOB", "bob")
        click(browser, dev, ts, APPROVE)
        until(browser, "the message to show the decision", lambda d: "Approved by @bob" in message(d, ts).text)
        out, _ = ask.communicate(timeout=60)
        lines = out.strip().splitlines()
        assert ask.returncode == 0, (ask.returncode, out, (tmp_path / "ask.log").read_text())
        assert re.fullmatch(r"req_[0-9A-Z]{26}", lines[0]), out
        assert lines[-1] == "approved by U0BOB", out
        assert "`approved by U0BOB`" in section and "exits 0" in section

        # The curl block, in the same shell as the export: it creates, then long-polls while
        # the click is made.
        curl = bash(
            readme_export.replace(PLACEHOLDER, key) + "\n" + curl_block, env, open(tmp_path / "curl.log", "w")
        )

        def pending_ts():
            for m in dev.sandbox("GET", "messages?channel=C0DEPLOY").json():
                if "Deploy api v1.2" in json.dumps(m["blocks"]) and any(b["type"] == "actions" for b in m["blocks"]):
                    return m["ts"]
            return None

        ts = wait_for("the curl request's message", pending_ts)
        time.sleep(0.5)  # the long-poll is waiting by now; the decision must wake it
        click(browser, dev, ts, APPROVE)
        out, _ = curl.communicate(timeout=60)
        assert curl.returncode == 0, (out, (tmp_path / "curl.log").read_text())
        assert '"status":"approved"' in out and '"decided_by":"U0BOB"' in out, out
    finally:
        stop(dev_proc)
    # A clean stop leaves the database folded back into one file.
    assert db.exists()
    assert not (tmp_path / "greenlight.db-wal").exists(), "SIGTERM left the write-ahead log behind"
