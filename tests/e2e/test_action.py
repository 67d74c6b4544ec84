"""The GitHub Action (action.yml + action/approve.sh) run as GitHub runs a composite step: the
step's `run:` line from action.yml in `bash --noprofile --norc -eo pipefail`, with only the
INPUT_* variables that action.yml's `env:` maps from the inputs (read from action.yml, defaults
included), the runner's GITHUB_* variables, and temporary GITHUB_OUTPUT / GITHUB_STEP_SUMMARY
files, parsed back as the runner parses them. A person clicks in the sandbox; the outputs, the
exit code, the log's workflow commands and what greenlight stored are checked."""

from __future__ import annotations

import os
import re
import secrets
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pytest

from conftest import (
    REPO,
    START_TIMEOUT,
    Child,
    Response,
    greenlight_bin,
    hermetic_env,
    http,
    start_dev,
    wait_for,
    wait_listening,
)

ACTION_YML = REPO / "action.yml"
STEP_ID = "greenlight"
# Far above what a decision takes here (milliseconds); only a bound for a hung test.
WAIT = 15
APPROVE = "greenlight.approve"
DENY = "greenlight.deny"
OUTPUTS = ("approval-status", "approver", "reason", "request-id")
CREATED = re.compile(r"^greenlight: created (req_\w+)", re.M)


# --- action.yml, read the way the runner needs it ------------------------------------------------


@dataclass
class ActionSpec:
    inputs: dict[str, str | None]  # name -> default (None: required, no default)
    env: dict[str, str]  # variable -> expression inside ${{ }}
    outputs: dict[str, str]  # name -> value expression
    run: str


def blocks(text: str, indent: int) -> dict[str, str]:
    """The `key:` entries at exactly `indent` spaces, each with the text indented below it."""
    out: dict[str, str] = {}
    key = None
    for line in text.split("\n"):
        m = re.match(rf"^ {{{indent}}}([A-Za-z0-9_-]+):(.*)$", line)
        if m:
            key = m.group(1)
            out[key] = m.group(2).strip()
        elif key is not None and (line.startswith(" " * (indent + 1)) or not line.strip()):
            out[key] += "\n" + line
        else:
            key = None
    return out


def section(text: str, name: str) -> str:
    m = re.search(rf"^{name}:\n((?:[ #].*\n|\n)*)", text, re.M)
    assert m, f"action.yml has no {name}: section"
    return m.group(1)


def unquote(value: str) -> str:
    value = value.strip()
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
        return value[1:-1]
    return value


def read_action() -> ActionSpec:
    text = ACTION_YML.read_text()
    inputs = {}
    for name, body in blocks(section(text, "inputs"), 2).items():
        default = re.search(r"^    default:(.*)$", body, re.M)
        inputs[name] = unquote(default.group(1)) if default else None
    outputs = {}
    for name, body in blocks(section(text, "outputs"), 2).items():
        value = re.search(r"^    value: \$\{\{ (.+?) \}\}$", body, re.M)
        assert value, f"output {name} has no value expression"
        outputs[name] = value.group(1)
    runs = section(text, "runs")
    assert re.search(r"^  using: composite$", runs, re.M), "the action is not a composite action"
    steps = runs.split("\n    - ")
    assert len(steps) == 2, "expected exactly one step under runs.steps"
    step = "    - " + steps[1]
    assert re.search(rf"^    - id: {STEP_ID}$", step, re.M)
    assert re.search(r"^      shell: bash$", step, re.M)
    env_block = re.search(r"^      env:\n((?:        .*\n|\s*#.*\n)*)", step, re.M)
    assert env_block, "the step has no env: block"
    env = dict(re.findall(r"^        ([A-Z][A-Z0-9_]*): \$\{\{ (.+?) \}\}$", env_block.group(1), re.M))
    run = re.search(r"^      run: (.+)$", step, re.M)
    assert run, "the step has no one-line run:"
    return ActionSpec(inputs, env, outputs, run.group(1))


ACTION = read_action()


def test_action_yml_maps_every_input_and_output():
    expected_inputs = {"server-url", "token", "workflow", "title", "details", "params", "timeout", "fail-on-denial"}
    assert expected_inputs <= set(ACTION.inputs)
    assert ACTION.inputs["timeout"] == "30m"
    assert ACTION.inputs["fail-on-denial"] == "true"
    # GitHub sets no INPUT_* for a composite action: each input must be mapped by hand, once.
    mapped = {expr.removeprefix("inputs."): var for var, expr in ACTION.env.items() if expr.startswith("inputs.")}
    assert set(mapped) == set(ACTION.inputs), "every input mapped to the step's environment, and only inputs"
    for name, var in mapped.items():
        assert var == "INPUT_" + name.upper().replace("-", "_")
    assert set(ACTION.outputs) == set(OUTPUTS)
    for name, expr in ACTION.outputs.items():
        assert expr == f"steps.{STEP_ID}.outputs.{name}"
    assert "$GITHUB_ACTION_PATH/action/approve.sh" in ACTION.run


# --- running the step as the runner would ----------------------------------------------------------


def parse_github_output(text: str) -> dict[str, str]:
    """GITHUB_OUTPUT as the runner reads it: `name=value` lines and `name<<DELIMITER` blocks."""
    out: dict[str, str] = {}
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    i = 0
    while i < len(lines):
        line = lines[i]
        if line == "":
            i += 1
            continue
        m = re.match(r"^([^=]+?)<<(.+)$", line)
        if m:
            name, delimiter = m.groups()
            end = lines.index(delimiter, i + 1)  # ValueError: no matching delimiter
            value = "\n".join(lines[i + 1 : end])
            i = end + 1
        else:
            name, value = line.split("=", 1)
            i += 1
        assert name not in out, f"output {name} written twice"
        out[name] = value
    return out


@dataclass
class Run:
    """One execution of the action's step."""

    popen: subprocess.Popen
    log_path: Path
    output_path: Path
    summary_path: Path
    token: str

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def request_id(self) -> str:
        def probe():
            if self.popen.poll() is not None and not CREATED.search(self.log()):
                raise AssertionError(f"the step exited with {self.popen.returncode}:\n{self.log()}")
            m = CREATED.search(self.log())
            return m and m.group(1)

        return wait_for("the step to create its request", probe, timeout=WAIT)

    def finish(self, timeout: float = WAIT) -> "Result":
        try:
            code = self.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"the step did not finish within {timeout} s:\n{self.log()}")
        log = self.log()
        outputs = parse_github_output(self.output_path.read_text())
        summary = self.summary_path.read_text() if self.summary_path.exists() else ""
        # The key is masked before anything else is printed, and printed nowhere else.
        if self.token:
            assert log.startswith(f"::add-mask::{self.token}\n"), log
            assert log.count(self.token) == 1, log
        # So is every OIDC token the step fetched (auth: oidc).
        for masked in re.findall(r"^::add-mask::(.+)$", log, re.M):
            assert log.count(masked) == 1, log
        return Result(code, outputs, log, summary)


@dataclass
class Result:
    code: int
    outputs: dict[str, str]
    log: str
    summary: str

    def __post_init__(self):
        # Every outcome writes every output.
        assert set(self.outputs) == set(OUTPUTS), (self.outputs, self.log)


def kill_group(run: "Run") -> None:
    """SIGKILL to the step and everything it started (a runner that dies takes its curl too)."""
    try:
        os.killpg(run.popen.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    run.popen.wait(timeout=5)


@pytest.fixture
def step(request, tmp_path):
    """step(inputs, env=..., github=...) starts the action's step and returns a Run."""
    runs: list[Run] = []
    counter = iter(range(1000))

    def start(inputs: dict[str, str], env: dict[str, str] | None = None, github: dict[str, str] | None = None) -> Run:
        n = next(counter)
        work = tmp_path / f"step{n}"
        (work / "runner-temp").mkdir(parents=True)
        output_path, summary_path = work / "github_output", work / "step_summary"
        output_path.touch()
        summary_path.touch()
        unknown = set(inputs) - set(ACTION.inputs)
        assert not unknown, f"not inputs of action.yml: {unknown}"
        contexts = {"strategy.job-index": "0"}
        step_env = {}
        for var, expr in ACTION.env.items():
            if expr.startswith("inputs."):
                name = expr.removeprefix("inputs.")
                value = inputs.get(name, ACTION.inputs[name])
                step_env[var] = "" if value is None else value
            else:
                step_env[var] = contexts[expr]
        # What the runner gives every step (no proxies: everything here is on loopback).
        base = {
            "PATH": os.environ["PATH"],
            "HOME": str(work),
            "LANG": "C.UTF-8",
            "CI": "true",
            "GITHUB_ACTIONS": "true",
            "GITHUB_OUTPUT": str(output_path),
            "GITHUB_STEP_SUMMARY": str(summary_path),
            "GITHUB_ACTION_PATH": str(REPO),
            "GITHUB_ACTION": "__greenlight_greenlight",
            "GITHUB_REPOSITORY": "acme/shop",
            "GITHUB_WORKFLOW": "deploy",
            "GITHUB_JOB": "production",
            "GITHUB_RUN_ID": str(secrets.randbelow(10**10)),
            "GITHUB_RUN_ATTEMPT": "1",
            "RUNNER_TEMP": str(work / "runner-temp"),
        }
        base.update(github or {})
        base = {k: v for k, v in base.items() if v is not None}
        script = work / "step.sh"
        script.write_text(ACTION.run + "\n")
        log_path = work / "log.txt"
        with open(log_path, "wb") as log:
            popen = subprocess.Popen(
                ["bash", "--noprofile", "--norc", "-eo", "pipefail", str(script)],
                cwd=work,
                env={**base, **step_env, **(env or {})},
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                # Its own process group, like a job on a runner: a test can end the step and its
                # curl together.
                start_new_session=True,
            )
        run = Run(popen, log_path, output_path, summary_path, step_env["INPUT_TOKEN"])
        runs.append(run)
        return run

    def extra():
        return [(f"log of step {i}", r.log()) for i, r in enumerate(runs)]

    request.node.e2e_extra = extra
    yield start
    for run in runs:
        kill_group(run)


# --- Slack (the sandbox) ---------------------------------------------------------------------------

Sandbox = Callable[..., Response]


def message_for(sandbox: Sandbox, request_id: str) -> dict:
    """The sandbox message whose buttons carry `request_id`, once greenlight has posted it."""

    def find():
        for m in sandbox("GET", "messages?channel=C0DEPLOY&all=true").json():
            for b in m.get("blocks") or []:
                if any(e.get("value") == request_id for e in b.get("elements") or []):
                    return m
        return None

    return wait_for(f"the Slack message of {request_id}", find, timeout=WAIT)


def message_titled(sandbox: Sandbox, title: str) -> dict:
    return wait_for(
        f"a Slack message about {title!r}",
        lambda: next((m for m in sandbox("GET", "messages?channel=C0DEPLOY&all=true").json() if title in m["text"]), None),
        timeout=WAIT,
    )


def click(sandbox: Sandbox, message: dict, action_id: str, user: str) -> None:
    r = sandbox("POST", "click", {"channel": "C0DEPLOY", "message_ts": message["ts"], "action_id": action_id, "user": user})
    assert r.status == 200 and r.json()["status"] == 200, r.body


def deny_with_reason(sandbox: Sandbox, message: dict, user: str, reason: str) -> None:
    """Deny opens a modal asking why (require_deny_reason); type the reason and submit it."""
    click(sandbox, message, DENY, user)
    view = wait_for(
        "the deny-reason modal",
        lambda: next(iter(sandbox("GET", f"views?open=true&user={user}").json()[::-1]), None),
        timeout=WAIT,
    )
    r = sandbox("POST", "views/submit", {"view_id": view["id"], "user": user, "values": {"greenlight.reason": reason}})
    assert r.status == 200 and r.json()["status"] == 200, r.body


def buttons_gone(sandbox: Sandbox, ts: str) -> bool:
    m = next(m for m in sandbox("GET", "messages?channel=C0DEPLOY&all=true").json() if m["ts"] == ts)
    return not any(b["type"] == "actions" for b in m.get("blocks") or [])


def stored(server, request_id: str) -> dict:
    r = server.call("GET", f"/v1/requests/{request_id}")
    assert r.status == 200, r.body
    return r.json()


def stored_raw(server, request_id: str) -> str:
    return server.call("GET", f"/v1/requests/{request_id}").body.decode()


def inputs_for(server, **more) -> dict[str, str]:
    return {"server-url": server.api, "token": server.key, "workflow": "deploy", **more}


# --- servers ---------------------------------------------------------------------------------------

DENY_REASON_CONFIG = """
[[workflow]]
name = "deploy"
channel = "#deploy"
require_deny_reason = true
"""


@pytest.fixture
def dev_deny_reason(request, tmp_path):
    """`greenlight dev` whose deploy workflow asks for a reason on Deny (greenlight.toml in the
    directory it starts in)."""
    (tmp_path / "greenlight.toml").write_text(DENY_REASON_CONFIG)
    return request.getfixturevalue("dev")


@dataclass
class Server:
    """`greenlight serve` against a standalone sandbox, restartable on the same port and SQLite
    file. (A restart of `greenlight dev` would restart its in-memory Slack too, losing the message
    a person is about to click; here Slack outlives greenlight, as the real one does.)"""

    spawn: Callable
    env: dict
    api: str
    key: str
    sandbox_url: str
    child: Child | None = None
    starts: int = 0
    children: list = field(default_factory=list)

    def start(self) -> None:
        self.starts += 1
        self.child = self.spawn(f"greenlight-serve-{self.starts}", [str(greenlight_bin()), "serve"], self.env)
        wait_listening(self.child, f"{self.api}/readyz")

    def stop(self, sig: int) -> None:
        assert self.child is not None
        self.child.popen.send_signal(sig)
        self.child.popen.wait(timeout=START_TIMEOUT)

    def call(self, method: str, path: str, body=None) -> Response:
        return http(method, f"{self.api}{path}", body, {"Authorization": f"Bearer {self.key}"})

    def sandbox(self, method: str, path: str, body=None) -> Response:
        return http(method, f"{self.sandbox_url}/_sandbox/{path}", body)


@pytest.fixture
def server(spawn, start_sandbox, tmp_path) -> Server:
    from conftest import free_port

    port = free_port()
    api = f"http://127.0.0.1:{port}"
    sb = start_sandbox(interactivity_url=f"{api}/slack/interactions")
    (tmp_path / "greenlight.toml").write_text('[[workflow]]\nname = "deploy"\nchannel = "#deploy"\n')
    env = hermetic_env(
        GREENLIGHT_LISTEN=f"127.0.0.1:{port}",
        GREENLIGHT_DATABASE_URL=f"sqlite:{tmp_path / 'greenlight.db'}",
        SLACK_BOT_TOKEN=sb.bot_token,
        SLACK_SIGNING_SECRET=sb.signing_secret,
        SLACK_API_URL=sb.api_url,
    )
    # The scopes docs/ci.md tells people to give the action's key.
    keys = subprocess.run(
        [str(greenlight_bin()), "keys", "create", "--name", "github-actions", "--scopes", "request,read"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=START_TIMEOUT,
    )
    assert keys.returncode == 0, keys.stderr
    s = Server(spawn, env, api, keys.stdout.strip(), sb.url)
    s.start()
    return s


# --- the outcomes ----------------------------------------------------------------------------------

PARAMS = """
# what is deployed
service = api
version=1.10
replicas=3
canary=true
ratio=0.25
build=12345678901234567890
whole=2.0
padded=007
query=a=b&c=d

replicas=4
"""


def test_approve(dev, step):
    title = 'Deploy "api" v1.10 to production'
    run = step(inputs_for(dev, title=title, details="Change: https://example.test/pr/42\nRisk: low", params=PARAMS))
    request_id = run.request_id()
    message = message_for(dev.sandbox, request_id)
    click(dev.sandbox, message, APPROVE, "U0BOB")

    result = run.finish()
    assert result.code == 0, result.log
    assert result.outputs == {
        "approval-status": "approved",
        "approver": "U0BOB",
        "reason": "",
        "request-id": request_id,
    }
    assert f"::notice title=greenlight::\"{title}\" approved by U0BOB ({request_id})" in result.log
    assert "### greenlight: ✅ Approved" in result.summary and f"`{request_id}`" in result.summary

    request = stored(dev, request_id)
    assert (request["title"], request["workflow"], request["status"]) == (title, "deploy", "approved")
    assert request["details"] == "Change: https://example.test/pr/42\nRisk: low"
    # Typed as `greenlight ask --param` types them; the raw JSON shows numbers exactly as sent.
    assert request["params"] == {
        "service": "api",
        "version": "1.10",
        "replicas": 4,
        "canary": True,
        "ratio": 0.25,
        "build": 12345678901234567890,
        "whole": 2.0,
        "padded": "007",
        "query": "a=b&c=d",
    }
    raw = stored_raw(dev, request_id)
    assert '"build":12345678901234567890' in raw and '"whole":2.0' in raw


# Values whose JSON type the rule decides; the action must type each as `greenlight ask --param`
# does (serde_json printing back the literal), on any jq.
TYPED_VALUES = [
    "0", "-5", "3", "007", "+1", "-0", "1_000", "12345678901234567890", "18446744073709551616",
    "-9223372036854775808", "-9223372036854775809", "9007199254740993", "123456789012345678901234",
    "0.1", "3.14", "1.5", "-1.5", "1.0", "2.50", "1.10", "0.0", "-0.0", "100.25",
    "0.30000000000000004", "0.30000000000000001", "1000000000000000.0", "10000000000000000.0",
    "0.0001", "0.00001", "0.000015", "0.0000015", "1e3", "1E+2", "1e-5", "1e-6", "1.5e-7",
    "-1.5e-7", "1.5e-07", "1e16", "1e+16", "1e+15", "1.5e+300", "1.7976931348623157e+308",
    "1e400", "5e-324", "true", "false", "True", "null", "nan", "[1]", '"q"', "v1.2", "",
]


def typed(params: dict) -> dict:
    return {k: (type(v).__name__, repr(v)) for k, v in params.items()}


def test_params_are_typed_as_the_cli_types_them(dev, step):
    by_cli, by_action = {}, {}
    for chunk in range(0, len(TYPED_VALUES), 40):  # a request holds at most 50 params
        values = dict(list(enumerate(TYPED_VALUES))[chunk : chunk + 40])
        args = [a for i, v in values.items() for a in ("--param", f"p{i}={v}")]
        cli = subprocess.run(
            [str(greenlight_bin()), "ask", "--workflow", "deploy", "--title", "typed by the CLI", *args],
            env=hermetic_env(GREENLIGHT_URL=dev.api, GREENLIGHT_TOKEN=dev.key),
            capture_output=True,
            text=True,
            timeout=WAIT,
        )
        assert cli.returncode == 0, cli.stderr
        by_cli.update(stored(dev, cli.stdout.split()[0])["params"])
        lines = "\n".join(f"p{i}={v}" for i, v in values.items())
        result = step(inputs_for(dev, title="typed by the action", params=lines, timeout="1s")).finish()
        assert result.code == 4, result.log
        by_action.update(stored(dev, result.outputs["request-id"])["params"])
    assert len(by_cli) == len(TYPED_VALUES)
    mismatched = {
        TYPED_VALUES[int(k[1:])]: (by_cli[k], by_action.get(k))
        for k in by_cli
        if typed({k: by_cli[k]}) != typed({k: by_action.get(k)})
    }
    assert mismatched == {}, "value: (CLI, action)"


def deny_case(server, step, fail_on_denial: str) -> tuple[Result, str, str]:
    title = f"Drop table invoices ({fail_on_denial})"
    run = step(inputs_for(server, title=title, **{"fail-on-denial": fail_on_denial}))
    request_id = run.request_id()
    # A reason over several lines, with a line that looks like a delimiter and one that looks
    # like a workflow command: neither may end the output early or reach the runner.
    reason = "Not during the freeze.\nEOF\n::warning::not a command\nTry Monday."
    deny_with_reason(server.sandbox, message_for(server.sandbox, request_id), "U0CAROL", reason)
    return run.finish(), request_id, reason


def test_deny_fails_the_step(dev_deny_reason, step):
    result, request_id, reason = deny_case(dev_deny_reason, step, "true")
    assert result.code == 1, result.log
    assert result.outputs == {
        "approval-status": "denied",
        "approver": "U0CAROL",
        "reason": reason,
        "request-id": request_id,
    }
    assert "\n::warning::not a command" not in result.log
    assert "::error title=greenlight::" in result.log and "%0A::warning::not a command%0A" in result.log
    assert "### greenlight: ❌ Denied" in result.summary
    assert "Not during the freeze.<br>EOF<br>::warning::not a command<br>Try Monday." in result.summary


def test_deny_without_fail_on_denial_passes(dev_deny_reason, step):
    result, request_id, reason = deny_case(dev_deny_reason, step, "false")
    assert result.code == 0, result.log
    assert result.outputs == {
        "approval-status": "denied",
        "approver": "U0CAROL",
        "reason": reason,
        "request-id": request_id,
    }
    assert "::warning title=greenlight::" in result.log and "::error" not in result.log


def test_timeout_fails_and_cancels_the_request(dev, step):
    start = time.monotonic()
    run = step(inputs_for(dev, title="Rotate the signing key", timeout="3s", **{"fail-on-denial": "false"}))
    request_id = run.request_id()
    message = message_for(dev.sandbox, request_id)
    result = run.finish()
    elapsed = time.monotonic() - start
    assert result.code == 4, result.log
    assert result.outputs == {"approval-status": "timeout", "approver": "", "reason": "", "request-id": request_id}
    assert 1.5 <= elapsed < 8, elapsed  # the script counts whole seconds
    assert f"::error title=greenlight::no decision on \"Rotate the signing key\" within 3s ({request_id})" in result.log
    # Nobody can approve it any more: cancelled in greenlight, and the buttons leave Slack.
    request = stored(dev, request_id)
    assert request["status"] == "cancelled"
    assert request["reason"] == "no decision within 3s; the CI job stopped waiting"
    wait_for("the message to lose its buttons", lambda: buttons_gone(dev.sandbox, message["ts"]), timeout=WAIT)


def test_expired_request_fails_the_step(dev, step):
    run = step(inputs_for(dev, title="Expire me", timeout="30s", **{"expires-in": "2s"}))
    request_id = run.request_id()
    result = run.finish()
    assert result.code == 3, result.log
    request = stored(dev, request_id)
    assert request["status"] == "expired"
    assert result.outputs == {
        "approval-status": "expired",
        "approver": request["decided_by"] or "",
        "reason": "",
        "request-id": request_id,
    }


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["crash", "graceful-restart"])
def test_survives_a_server_restart(server, step, sig):
    # Short long-polls for the graceful case: greenlight's shutdown waits for open long-polls
    # to end before the process exits and frees the port.
    env = {"GREENLIGHT_POLL_WAIT": "2"} if sig == signal.SIGTERM else {}
    run = step(inputs_for(server, title=f"Deploy after a restart ({sig.name})", timeout="45s"), env=env)
    request_id = run.request_id()
    message = message_for(server.sandbox, request_id)

    server.stop(sig)
    wait_for("the step to notice", lambda: "cannot reach" in run.log(), timeout=WAIT)
    assert run.popen.poll() is None, run.log()
    server.start()
    click(server.sandbox, message, APPROVE, "U0BOB")

    result = run.finish(timeout=30)
    assert result.code == 0, result.log
    assert result.outputs == {"approval-status": "approved", "approver": "U0BOB", "reason": "", "request-id": request_id}
    assert stored(server, request_id)["decided_by"] == "U0BOB"


def test_bad_token_is_a_clear_error_and_claims_nothing(dev, step):
    result = step(inputs_for(dev, title="Deploy with a wrong key", token="gl_" + "0" * 64)).finish()
    assert result.code == 5, result.log
    assert result.outputs == {"approval-status": "", "approver": "", "reason": "", "request-id": ""}
    assert (
        "::error title=greenlight::greenlight refused the request: HTTP 401 unauthorized: unknown or revoked API key"
        in result.log
    )
    assert "### greenlight: ⚠️ Failed" in result.summary
    assert dev.call("GET", "/v1/requests").json()["requests"] == []


def test_unknown_workflow_is_a_usage_error(dev, step):
    result = step(inputs_for(dev, title="Deploy", workflow="no-such-workflow")).finish()
    assert result.code == 2, result.log
    assert result.outputs["approval-status"] == "" and result.outputs["request-id"] == ""
    assert "HTTP 400 unknown_workflow:" in result.log


@pytest.mark.parametrize(
    "inputs, message",
    [
        ({"title": ""}, "the title input is required"),
        ({"timeout": "soon"}, "timeout must be a duration"),
        ({"params": "version=1.2\nno equals sign"}, "params line 2 is not key=value"),
        ({"fail-on-denial": "maybe"}, "fail-on-denial must be true or false"),
        ({"server-url": "greenlight.internal:8080"}, "server-url must be an http:// or https:// URL"),
    ],
)
def test_bad_inputs_fail_before_asking(step, inputs, message):
    # No server at all: nothing is sent.
    base = {"server-url": "http://127.0.0.1:9", "token": "gl_x", "title": "Deploy"}
    result = step({**base, **inputs}).finish()
    assert result.code == 2, result.log
    assert f"::error title=greenlight::{message}" in result.log
    assert result.outputs == {"approval-status": "", "approver": "", "reason": "", "request-id": ""}


def test_a_rerun_of_the_step_finds_the_same_request(dev, step):
    github = {"GITHUB_RUN_ID": "9000000001", "GITHUB_RUN_ATTEMPT": "1"}
    inputs = inputs_for(dev, title="Deploy web v7", params="version=7")
    first = step(inputs, github=github)
    request_id = first.request_id()
    message = message_for(dev.sandbox, request_id)
    # The runner lost the step (the job is picked up again in the same attempt): it asks again
    # and finds the request it made, so no second message appears in Slack.
    kill_group(first)
    again = step(inputs, github=github)
    wait_for("the step to find its request", lambda: f"found {request_id} again" in again.log(), timeout=WAIT)
    click(dev.sandbox, message, APPROVE, "U0DAVE")
    result = again.finish()
    assert result.code == 0, result.log
    assert result.outputs["request-id"] == request_id and result.outputs["approver"] == "U0DAVE"
    titled = [m for m in dev.sandbox("GET", "messages?channel=C0DEPLOY&all=true").json() if "Deploy web v7" in m["text"]]
    assert len(titled) == 1

    # "Re-run jobs" is a new attempt: a fresh request, not the old decision.
    rerun = step(inputs, github={**github, "GITHUB_RUN_ATTEMPT": "2"})
    assert rerun.request_id() != request_id


@pytest.mark.parametrize(
    "sig, to_group, code",
    [(signal.SIGTERM, False, 143), (signal.SIGTERM, True, 143), (signal.SIGINT, True, 130)],
    ids=["SIGTERM-to-the-step", "SIGTERM-to-the-group", "SIGINT-to-the-group"],
)
def test_a_cancelled_job_cancels_the_request(dev, step, sig, to_group, code):
    run = step(inputs_for(dev, title="Deploy, then cancel the run"))
    request_id = run.request_id()
    message = message_for(dev.sandbox, request_id)
    time.sleep(0.3)  # well inside the long-poll
    start = time.monotonic()
    if to_group:  # the step and its curl, as a terminal's Ctrl-C or a runner killing the tree
        os.killpg(run.popen.pid, sig)
    else:  # the step's shell alone: its curl goes on long-polling
        run.popen.send_signal(sig)
    result = run.finish(timeout=10)
    assert time.monotonic() - start < 5, "the signal waited for the long-poll"
    assert result.code == code, result.log
    assert result.outputs["approval-status"] == "cancelled" and result.outputs["request-id"] == request_id
    request = stored(dev, request_id)
    assert (request["status"], request["reason"]) == ("cancelled", "the CI job was cancelled")
    wait_for("the message to lose its buttons", lambda: buttons_gone(dev.sandbox, message["ts"]), timeout=WAIT)


# --- the greenlight CLI instead of curl ------------------------------------------------------------


def bin_dir_with_greenlight(tmp_path: Path, without: tuple[str, ...] = ()) -> str:
    """A PATH with greenlight on it, and without some tools (every other program of PATH is
    linked in)."""
    d = tmp_path / "bin"
    d.mkdir(exist_ok=True)
    (d / "greenlight").symlink_to(greenlight_bin())
    if not without:
        return f"{d}:{os.environ['PATH']}"
    for directory in os.environ["PATH"].split(":"):
        if not os.path.isdir(directory):
            continue
        for name in os.listdir(directory):
            target = d / name
            if name in without or target.exists() or target.is_symlink():
                continue
            path = os.path.join(directory, name)
            if os.access(path, os.X_OK) and not os.path.isdir(path):
                target.symlink_to(path)
    return str(d)


def test_cli_client_with_jq(dev, step, tmp_path):
    path = bin_dir_with_greenlight(tmp_path)
    title = "Deploy through the CLI"
    run = step(inputs_for(dev, title=title, params="version=1.10\nreplicas=3"), env={"PATH": path, "GREENLIGHT_CLIENT": "cli"})
    message = message_titled(dev.sandbox, title)
    click(dev.sandbox, message, APPROVE, "U0ERIN")
    result = run.finish()
    assert result.code == 0, result.log
    request_id = result.outputs["request-id"]
    assert request_id.startswith("req_")
    assert result.outputs == {"approval-status": "approved", "approver": "U0ERIN", "reason": "", "request-id": request_id}
    assert stored(dev, request_id)["params"] == {"version": "1.10", "replicas": 3}


def test_cli_client_chosen_without_curl_and_jq(dev_deny_reason, step, tmp_path):
    dev = dev_deny_reason
    path = bin_dir_with_greenlight(tmp_path, without=("curl", "jq"))
    title = "Deploy from a minimal image"
    run = step(inputs_for(dev, title=title), env={"PATH": path})
    message = message_titled(dev.sandbox, title)
    deny_with_reason(dev.sandbox, message, "U0FRANK", "Not today.\nSee the incident channel.")
    result = run.finish()
    assert result.code == 1, result.log
    request_id = result.outputs["request-id"]
    assert result.outputs == {
        "approval-status": "denied",
        "approver": "U0FRANK",
        "reason": "Not today.\nSee the incident channel.",
        "request-id": request_id,
    }
    assert stored(dev, request_id)["status"] == "denied"


def test_cli_client_timeout(dev, step, tmp_path):
    path = bin_dir_with_greenlight(tmp_path)
    run = step(inputs_for(dev, title="Nobody answers the CLI", timeout="2s"), env={"PATH": path, "GREENLIGHT_CLIENT": "cli"})
    result = run.finish()
    assert result.code == 4, result.log
    assert result.outputs["approval-status"] == "timeout" and result.outputs["request-id"].startswith("req_")


def test_oidc_auth_asks_with_the_jobs_own_token_and_no_secret(spawn, tmp_path, step):
    from oidc_issuer import Issuer, trust_config

    issuer = Issuer()
    try:
        config = tmp_path / "greenlight.toml"
        config.write_text(trust_config(issuer))
        server = start_dev(spawn, tmp_path, GREENLIGHT_CONFIG=str(config))
        actions = {
            "ACTIONS_ID_TOKEN_REQUEST_URL": issuer.actions_request_url,
            "ACTIONS_ID_TOKEN_REQUEST_TOKEN": issuer.request_token,
        }
        run = step(
            {"server-url": server.api, "auth": "oidc", "workflow": "deploy", "title": "Deploy with OIDC"},
            env=actions,
        )
        request_id = run.request_id()
        click(server.sandbox, message_for(server.sandbox, request_id), APPROVE, "U0BOB")
        result = run.finish()
        assert result.code == 0, result.log
        assert result.outputs["approval-status"] == "approved"
        request = stored(server, request_id)
        assert request["identity"]["trust"] == "github-acme", request
        assert request["requester"] == "acme/shop@refs/heads/main"
        # A fresh token for the create and for each poll after it.
        assert issuer.tokens_handed_out >= 2

        # Without `permissions: id-token: write` the runner gives no request URL: a usage error.
        result = step({"server-url": server.api, "auth": "oidc", "title": "No permission"}).finish()
        assert result.code == 2, result.log
        assert "id-token: write" in result.log
        # A token the server's policy does not accept (another audience) is a clear 401.
        result = step(
            {"server-url": server.api, "auth": "oidc", "audience": "elsewhere", "title": "Wrong audience"},
            env=actions,
        ).finish()
        assert result.code == 5, result.log
        assert "invalid_token" in result.log and "audience elsewhere" in result.log
    finally:
        issuer.stop()
