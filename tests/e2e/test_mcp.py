"""AI agents through the official Python MCP SDK (`mcp` on PyPI), against `greenlight dev`: over
streamable HTTP (`POST /mcp` with an API key) and over stdio (`greenlight mcp` as a child
process, a client of the server). A person decides in the sandbox; the agent hears it."""

from __future__ import annotations

import json
import threading
from contextlib import asynccontextmanager

import anyio
import httpx2
from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client
from mcp.client.streamable_http import streamable_http_client

from conftest import greenlight_bin, hermetic_env, http, start_dev, wait_for


@asynccontextmanager
async def over_http(dev, key=None):
    headers = {"Authorization": f"Bearer {key or dev.key}"}
    async with httpx2.AsyncClient(headers=headers, timeout=120) as client:
        async with streamable_http_client(f"{dev.api}/mcp", http_client=client) as streams:
            async with ClientSession(streams[0], streams[1]) as session:
                await session.initialize()
                yield session


@asynccontextmanager
async def over_stdio(dev):
    env = hermetic_env(GREENLIGHT_URL=dev.api, GREENLIGHT_TOKEN=dev.key)
    params = StdioServerParameters(command=str(greenlight_bin()), args=["mcp"], env=env)
    async with stdio_client(params) as (read, write):
        async with ClientSession(read, write) as session:
            await session.initialize()
            yield session


def data(result) -> dict:
    """A tool result's structured content, checked against its text twin."""
    assert result.structured_content is not None, result
    assert json.loads(result.content[0].text) == result.structured_content
    return result.structured_content


def click_when_posted(dev, needle: str, action: str, user: str, submit: dict | None = None) -> threading.Thread:
    """Clicks the first message with buttons that shows `needle`, once it is posted; with
    `submit`, then submits the modal the click opened with those values (block_id -> value)."""

    def find():
        for m in dev.sandbox("GET", "messages?channel=C0DEPLOY").json():
            shown = json.dumps(m["blocks"])
            if needle in shown and any(b["type"] == "actions" for b in m["blocks"]):
                return m["ts"]
        return None

    def run():
        ts = wait_for(f"a message showing {needle!r}", find, timeout=20)
        r = dev.sandbox("POST", "click", {"channel": "C0DEPLOY", "message_ts": ts, "action_id": action, "user": user})
        assert r.status == 200, r.body
        if submit is not None:
            view = wait_for("the modal", lambda: next(iter(dev.sandbox("GET", f"views?open=true&user={user}").json()), None))
            r = dev.sandbox("POST", "views/submit", {"view_id": view["id"], "user": user, "values": submit})
            assert r.status == 200 and r.json()["body"] == "", r.body

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


def agent_story(connect, dev, label: str):
    async def story():
        async with connect(dev) as s:
            tools = {t.name: t for t in (await s.list_tools()).tools}
            assert set(tools) >= {
                "request_approval",
                "get_approval",
                "cancel_approval",
                "list_pending_approvals",
                "permission_prompt",
                "ask_question",
            }
            assert "title" in tools["request_approval"].input_schema["required"]

            created = data(
                await s.call_tool(
                    "request_approval",
                    {"title": f"Deploy api v3 ({label})", "metadata": {"run_id": f"run-{label}"}},
                )
            )
            assert created["status"] == "pending"
            clicker = click_when_posted(dev, f"Deploy api v3 ({label})", "greenlight.approve", "U0BOB")
            got = data(await s.call_tool("get_approval", {"request_id": created["request_id"], "wait_seconds": 30}))
            clicker.join(5)
            assert got["status"] == "approved", got
            assert got["decided_by"] == "U0BOB"
            assert got["metadata"] == {"run_id": f"run-{label}"}

            other = data(await s.call_tool("request_approval", {"title": f"Rotate keys ({label})"}))
            listed = data(await s.call_tool("list_pending_approvals", {}))
            assert other["request_id"] in [a["request_id"] for a in listed["approvals"]]
            cancelled = data(
                await s.call_tool("cancel_approval", {"request_id": other["request_id"], "reason": "not needed"})
            )
            assert cancelled["status"] == "cancelled"

            unknown = await s.call_tool("request_approval", {"title": "x", "workflow": "nope"})
            assert unknown.is_error is True
            assert unknown.structured_content["error"]["code"] == "unknown_workflow"

            # Approve opens the tool input for editing ([mcp] permission_editable, on by
            # default): the agent is told to run what the person approved.
            tool_input = {"command": f"terraform apply ({label})", "parallelism": 10}
            edited = {"command": f"terraform plan ({label})", "parallelism": 2}
            clicker = click_when_posted(
                dev,
                f"terraform apply ({label})",
                "greenlight.approve",
                "U0ALICE",
                submit={
                    "greenlight.edit.tool_call.input.command": edited["command"],
                    "greenlight.edit.tool_call.input.parallelism": "2",
                },
            )
            allowed = await s.call_tool("permission_prompt", {"tool_name": "Bash", "input": tool_input})
            clicker.join(5)
            assert json.loads(allowed.content[0].text) == {"behavior": "allow", "updatedInput": edited}

            # A question: typed answers back.
            clicker = click_when_posted(
                dev, f"Which region ({label})?", "greenlight.approve", "U0BOB",
                submit={"greenlight.field.region": "eu-west-1"},
            )
            answered = data(
                await s.call_tool(
                    "ask_question",
                    {"question": f"Which region ({label})?", "wait_seconds": 30,
                     "fields": [{"name": "region", "type": "select", "options": ["us-east-1", "eu-west-1"]}]},
                )
            )
            clicker.join(5)
            assert answered["status"] == "approved", answered
            assert answered["response"] == {"region": "eu-west-1"}

            clicker = click_when_posted(dev, f"rm -rf build ({label})", "greenlight.deny", "U0ALICE")
            denied = await s.call_tool(
                "permission_prompt", {"tool_name": "Bash", "input": {"command": f"rm -rf build ({label})"}}
            )
            clicker.join(5)
            answer = json.loads(denied.content[0].text)
            assert answer["behavior"] == "deny"
            assert answer["message"].startswith("Denied by @alice"), answer

    anyio.run(story)


def test_an_agent_over_streamable_http(dev):
    agent_story(over_http, dev, "http")


def test_an_agent_over_stdio_through_greenlight_mcp(dev):
    agent_story(over_stdio, dev, "stdio")


def test_mcp_without_a_key_is_refused(dev):
    body = {"jsonrpc": "2.0", "id": 1, "method": "initialize",
            "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "probe", "version": "1"}}}
    for headers in ({}, {"Authorization": "Bearer gl_not_a_key"}):
        r = http("POST", f"{dev.api}/mcp", body, {"Accept": "application/json, text/event-stream", **headers})
        assert r.status == 401, r.body
        assert r.json()["error"]["code"] == "unauthorized"


def test_stdio_permission_prompts_follow_the_servers_mcp_settings(spawn, tmp_path):
    """`greenlight mcp` with no flags, against a server with two workflows and `[mcp]`
    settings: the prompt lands in `permission_workflow` and expires after
    `permission_timeout`, as it would over HTTP (it used to fail with workflow_required)."""
    config = tmp_path / "greenlight.toml"
    config.write_text(
        '[[workflow]]\nname = "deploy"\nchannel = "#deploy"\n\n'
        '[[workflow]]\nname = "agents"\nchannel = "#ops"\n\n'
        '[mcp]\npermission_workflow = "agents"\npermission_timeout = "3s"\n'
    )
    dev = start_dev(spawn, tmp_path, GREENLIGHT_CONFIG=str(config))

    async def story():
        async with over_stdio(dev) as session:
            result = await session.call_tool(
                "permission_prompt", {"tool_name": "Bash", "input": {"command": "terraform apply"}}
            )
            assert not result.is_error, result
            answer = json.loads(result.content[0].text)
            assert answer["behavior"] == "deny", answer
            assert "expired" in answer["message"], answer

    anyio.run(story)
    requests = dev.call("GET", "/v1/requests?limit=10").json()["requests"]
    asked = [r for r in requests if r.get("tool_call")]
    assert len(asked) == 1, requests
    assert asked[0]["workflow"] == "agents"
    assert asked[0]["status"] == "expired"
    from datetime import datetime

    created = datetime.fromisoformat(asked[0]["created_at"].replace("Z", "+00:00"))
    expires = datetime.fromisoformat(asked[0]["expires_at"].replace("Z", "+00:00"))
    assert abs((expires - created).total_seconds() - 3) < 0.5

