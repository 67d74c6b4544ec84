"""Fixtures for the end-to-end tests: the real `greenlight` binary as a child process on free
loopback ports, a temporary SQLite file, headless Chromium. Child processes are always stopped in
teardown; when a test fails, their output is attached to the failure report."""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, TypeVar

import pytest

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("CHROMEDRIVER", "/usr/bin/chromedriver")
# How long a child process gets to start listening; far above the usual few milliseconds.
START_TIMEOUT = 20.0

T = TypeVar("T")


def greenlight_bin() -> Path:
    path = Path(os.environ.get("GREENLIGHT_BIN", REPO / "target" / "debug" / "greenlight"))
    if not path.is_file():
        pytest.fail(
            f"greenlight binary not found at {path}: run scripts/test, or `cargo build -p greenlight`"
            " and set GREENLIGHT_BIN",
            pytrace=False,
        )
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(what: str, probe: Callable[[], T | None], timeout: float = 10.0, every: float = 0.05) -> T:
    """Polls `probe` until it returns something other than None/False; fails with `what`."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while True:
        try:
            value = probe()
            if value is not None and value is not False:
                return value
        except Exception as e:  # the condition may not be checkable yet (connection refused)
            last_error = e
        if time.monotonic() > deadline:
            detail = f" (last error: {last_error!r})" if last_error else ""
            raise AssertionError(f"timed out after {timeout} s waiting for {what}{detail}")
        time.sleep(every)


@dataclass
class Response:
    status: int
    body: bytes
    headers: dict

    def json(self):
        return json.loads(self.body) if self.body else None


def http(method: str, url: str, body=None, headers: dict | None = None, timeout: float = 30.0) -> Response:
    """One HTTP request with the standard library; 4xx/5xx are returned, not raised."""
    data = None
    headers = dict(headers or {})
    if body is not None:
        data = json.dumps(body).encode()
        headers.setdefault("Content-Type", "application/json")
    req = urllib.request.Request(url, data=data, method=method, headers=headers)
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback: no proxies
    try:
        with opener.open(req, timeout=timeout) as r:
            return Response(r.status, r.read(), dict(r.headers))
    except urllib.error.HTTPError as e:
        return Response(e.code, e.read(), dict(e.headers))


@dataclass
class Child:
    """A child process whose stdout and stderr go to a log file."""

    name: str
    popen: subprocess.Popen
    log_path: Path

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError as e:
            return f"(no log: {e})"

    def assert_running(self) -> None:
        code = self.popen.poll()
        if code is not None:
            raise AssertionError(f"{self.name} exited with {code}:\n{self.log()}")

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(timeout=5)


def hermetic_env(**extra: str) -> dict:
    """The parent's environment without greenlight's or Slack's settings, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GREENLIGHT_", "SLACK_"))}
    env.setdefault("RUST_LOG", "info")
    env.update(extra)
    return env


@pytest.fixture
def spawn(request, tmp_path):
    """spawn(name, args, env) starts a child in tmp_path (so no greenlight.toml is picked up);
    every child is stopped at teardown and its log attached to a failure report."""
    children: list[Child] = []
    request.node.e2e_children = children

    def start(name: str, args: list[str], env: dict) -> Child:
        log_path = tmp_path / f"{name}.log"
        log = open(log_path, "wb")
        popen = subprocess.Popen(
            args, cwd=tmp_path, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT
        )
        log.close()
        child = Child(name, popen, log_path)
        children.append(child)
        return child

    yield start
    for child in children:
        child.stop()


def wait_listening(child: Child, url: str) -> None:
    """Waits until `url` answers 200, failing early (with the log) if the child exits."""

    def probe():
        child.assert_running()
        return http("GET", url, timeout=2).status == 200

    wait_for(f"{child.name} to answer {url}", probe, timeout=START_TIMEOUT)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.failed:
        for child in getattr(item, "e2e_children", []):
            report.sections.append((f"output of {child.name} ({' '.join(child.popen.args)})", child.log()))
        for title, text in getattr(item, "e2e_extra", lambda: [])():
            report.sections.append((title, text))


# --- the standalone sandbox -------------------------------------------------------------------


@dataclass
class SandboxProcess:
    child: Child
    url: str
    bot_token: str
    app_token: str
    signing_secret: str

    @property
    def api_url(self) -> str:
        return f"{self.url}/api/"

    def control(self, method: str, path: str, body=None) -> Response:
        return http(method, f"{self.url}/_sandbox/{path}", body)

    def messages(self, channel: str) -> list[dict]:
        r = self.control("GET", f"messages?channel={channel}&all=true")
        assert r.status == 200, r.body
        return r.json()

    def message(self, channel: str, ts: str) -> dict | None:
        return next((m for m in self.messages(channel) if m["ts"] == ts), None)

    def click(self, channel: str, ts: str, action_id: str, user: str) -> dict:
        r = self.control("POST", "click", {"channel": channel, "message_ts": ts, "action_id": action_id, "user": user})
        assert r.status == 200, r.body
        return r.json()


@pytest.fixture
def start_sandbox(spawn):
    """start_sandbox(interactivity_url=None) runs `greenlight sandbox` on a free port with tokens
    and a signing secret chosen here (not the sandbox's defaults)."""

    def start(interactivity_url: str | None = None) -> SandboxProcess:
        port = free_port()
        sb = SandboxProcess(
            child=None,  # type: ignore[arg-type]
            url=f"http://127.0.0.1:{port}",
            bot_token="xoxb-e2e-" + secrets.token_hex(12),
            app_token="xapp-1-e2e-" + secrets.token_hex(12),
            signing_secret=secrets.token_hex(16),
        )
        env = hermetic_env(
            GREENLIGHT_SANDBOX_LISTEN=f"127.0.0.1:{port}",
            SLACK_BOT_TOKEN=sb.bot_token,
            SLACK_APP_TOKEN=sb.app_token,
            SLACK_SIGNING_SECRET=sb.signing_secret,
        )
        if interactivity_url:
            env["GREENLIGHT_SANDBOX_INTERACTIVITY_URL"] = interactivity_url
        sb.child = spawn("greenlight-sandbox", [str(greenlight_bin()), "sandbox"], env)
        wait_listening(sb.child, f"{sb.url}/_sandbox/state")
        return sb

    return start


@pytest.fixture
def sandbox(start_sandbox) -> SandboxProcess:
    return start_sandbox()


# --- greenlight dev ---------------------------------------------------------------------------


@dataclass
class DevProcess:
    child: Child
    api: str
    page: str
    key: str

    def call(self, method: str, path: str, body=None, **headers) -> Response:
        h = {"Authorization": f"Bearer {self.key}", **headers}
        return http(method, f"{self.api}{path}", body, h)

    def sandbox(self, method: str, path: str, body=None) -> Response:
        return http(method, f"{self.page}/_sandbox/{path}", body)


@pytest.fixture
def dev(spawn, tmp_path) -> DevProcess:
    """`greenlight dev` on free ports with a fresh SQLite file and a key chosen here."""
    return start_dev(spawn, tmp_path)


def start_dev(spawn, tmp_path, **extra_env: str) -> DevProcess:
    """`greenlight dev` as the `dev` fixture starts it, with more environment (a config file)."""
    api_port, page_port = free_port(), free_port()
    d = DevProcess(
        child=None,  # type: ignore[arg-type]
        api=f"http://127.0.0.1:{api_port}",
        page=f"http://127.0.0.1:{page_port}",
        key="gl_" + secrets.token_hex(32),
    )
    env = hermetic_env(
        GREENLIGHT_LISTEN=f"127.0.0.1:{api_port}",
        GREENLIGHT_SANDBOX_LISTEN=f"127.0.0.1:{page_port}",
        GREENLIGHT_DATABASE_URL=f"sqlite:{tmp_path / 'greenlight.db'}",
        GREENLIGHT_TOKEN=d.key,
        **extra_env,
    )
    d.child = spawn("greenlight-dev", [str(greenlight_bin()), "dev"], env)
    wait_listening(d.child, f"{d.api}/readyz")
    wait_listening(d.child, f"{d.page}/_sandbox/state")
    return d


# --- the browser ------------------------------------------------------------------------------


@pytest.fixture
def browser(request, tmp_path):
    """Headless Chromium through the system chromedriver, with a fresh profile. On failure the
    report gets the browser console and a screenshot path."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    for path in (CHROMIUM, CHROMEDRIVER):
        if not os.access(path, os.X_OK):
            pytest.fail(f"{path} not found: apt-get install chromium chromium-driver", pytrace=False)
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--no-first-run",
        "--disable-sync",
        "--window-size=1180,640",
        f"--user-data-dir={tmp_path / 'chromium-profile'}",
    ):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    service = Service(CHROMEDRIVER, log_output=str(tmp_path / "chromedriver.log"))
    driver = webdriver.Chrome(service=service, options=options)

    def extra():
        out = []
        try:
            shot = tmp_path / "failure.png"
            driver.save_screenshot(str(shot))
            out.append(("browser screenshot", str(shot)))
            console = "\n".join(f"{e['level']} {e['message']}" for e in driver.get_log("browser"))
            out.append(("browser console", console or "(empty)"))
        except Exception as e:  # the browser itself may be what failed
            out.append(("browser", f"could not collect: {e!r}"))
        return out

    request.node.e2e_extra = extra
    yield driver
    driver.quit()
