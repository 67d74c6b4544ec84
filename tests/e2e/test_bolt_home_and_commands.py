"""A Bolt for Python app with an App Home and a slash command, unchanged except for the API base
URL, works against the sandbox: over HTTP (Bolt verifies every signed request; events and
commands go to the URLs derived from the interactivity URL) and over Socket Mode."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from slack_bolt import App, BoltRequest
from slack_bolt.adapter.socket_mode import SocketModeHandler
from slack_sdk import WebClient

from conftest import wait_for


def home_view(user: str, opened: int, approved: list[str]) -> dict:
    """The app's Home tab: a greeting, how often it was opened, two requests with Approve buttons."""
    rows = []
    for request_id, title in (("req_1", "Deploy api v1.2"), ("req_2", "Refund order 1042")):
        done = request_id in approved
        rows.append(
            {
                "type": "section",
                "text": {"type": "mrkdwn", "text": f"*{title}*" + (" :white_check_mark: approved" if done else "")},
                **(
                    {}
                    if done
                    else {
                        "accessory": {
                            "type": "button",
                            "action_id": "home_approve",
                            "value": request_id,
                            "style": "primary",
                            "text": {"type": "plain_text", "text": "Approve"},
                        }
                    }
                ),
            }
        )
    return {
        "type": "home",
        "callback_id": "greenlight_home",
        "blocks": [
            {"type": "header", "text": {"type": "plain_text", "text": "Pending approvals"}},
            {"type": "context", "elements": [{"type": "mrkdwn", "text": f"Hello <@{user}>, visit {opened}"}]},
            *rows,
        ],
    }


def bolt_app(sandbox, **kwargs) -> tuple[App, dict]:
    """A Bolt app that publishes a Home tab when it is opened, answers `/greenlight`, and
    re-publishes the tab when a request is approved from it."""
    web = WebClient(token=sandbox.bot_token, base_url=sandbox.api_url, timeout=10)
    app = App(client=web, **kwargs)
    seen: dict[str, list] = {"home": [], "commands": [], "clicks": [], "approved": []}

    @app.event("app_home_opened")
    def on_home(event, client):
        seen["home"].append(event)
        client.views_publish(user_id=event["user"], view=home_view(event["user"], len(seen["home"]), seen["approved"]))

    @app.command("/greenlight")
    def on_command(ack, command, respond):
        seen["commands"].append(command)
        ack(f"{command['text']}: 2 pending")
        respond(text="Details follow", response_type="ephemeral")

    @app.action("home_approve")
    def on_approve(ack, body, client):
        ack()
        seen["clicks"].append(body)
        seen["approved"].append(body["actions"][0]["value"])
        # The view's hash guards against overwriting a newer tab, as in Slack.
        client.views_publish(
            user_id=body["user"]["id"],
            hash=body["view"]["hash"],
            view=home_view(body["user"]["id"], len(seen["home"]), seen["approved"]),
        )

    return app, seen


@pytest.fixture
def bolt_server():
    """bolt_server(app) serves a Bolt app over HTTP on a free port; returns (base URL, paths hit)."""
    servers = []

    def serve(app: App) -> tuple[str, list[str]]:
        paths: list[str] = []

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                paths.append(self.path)
                body = self.rfile.read(int(self.headers.get("Content-Length", "0"))).decode()
                headers = {k.lower(): [v] for k, v in self.headers.items()}
                response = app.dispatch(BoltRequest(body=body, headers=headers))
                data = (response.body or "").encode()
                self.send_response(response.status)
                for name, values in response.headers.items():
                    for value in values:
                        self.send_header(name, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_port}", paths

    yield serve
    for s in servers:
        s.shutdown()
        s.server_close()


def home(sandbox, user: str) -> dict | None:
    r = sandbox.control("GET", f"home?user={user}")
    assert r.status == 200, r.body
    return r.json()["view"]


def home_text(view: dict) -> str:
    return str(view["view"]["blocks"])


def ephemerals(sandbox, channel: str, user: str) -> list[dict]:
    r = sandbox.control("GET", f"ephemerals?channel={channel}&user={user}")
    assert r.status == 200, r.body
    return r.json()


def exercise(sandbox, seen: dict, transport: str) -> None:
    """The story both transports share: open Home, approve from it, run the command."""
    # Opening the Home tab sends app_home_opened; the app publishes the tab in reply.
    opened = sandbox.control("POST", "home/open", {"user": "U0ALICE"})
    assert opened.status == 200, opened.body
    assert (opened.json()["transport"], opened.json()["status"]) == (transport, 200)
    view = wait_for("the published Home tab", lambda: home(sandbox, "U0ALICE"))
    assert "visit 1" in home_text(view) and "Deploy api v1.2" in home_text(view)
    event = seen["home"][0]
    assert (event["type"], event["user"], event["channel"], event["tab"]) == ("app_home_opened", "U0ALICE", "D0ALICE", "home")
    assert "view" not in event  # nothing was published before the first visit

    # A second visit carries the published view, and the app refreshes it.
    sandbox.control("POST", "home/open", {"user": "U0ALICE"})
    wait_for("the second visit", lambda: "visit 2" in home_text(home(sandbox, "U0ALICE")))
    assert seen["home"][1]["view"]["id"] == view["id"]

    # Approving from the Home tab is a block_actions with the view as container.
    clicked = sandbox.control("POST", "home/click", {"user": "U0ALICE", "action_id": "home_approve", "value": "req_2"})
    assert clicked.status == 200, clicked.body
    assert (clicked.json()["transport"], clicked.json()["status"]) == (transport, 200)
    body = seen["clicks"][0]
    assert body["container"] == {"type": "view", "view_id": view["id"]}
    assert body["view"]["type"] == "home" and "channel" not in body and "message" not in body
    wait_for("the refreshed tab", lambda: "*Refund order 1042* :white_check_mark: approved" in home_text(home(sandbox, "U0ALICE")))

    # /greenlight pending: the ack is shown to Bob alone, then respond() adds a second ephemeral.
    ran = sandbox.control(
        "POST", "command", {"user": "U0BOB", "channel": "deploy", "command": "/greenlight", "text": "pending"}
    )
    assert ran.status == 200, ran.body
    outcome = ran.json()
    assert (outcome["transport"], outcome["status"], outcome["timed_out"]) == (transport, 200, False)
    assert outcome["response"]["kind"] == "ephemeral"
    assert outcome["response"]["message"]["text"] == "pending: 2 pending"
    command = seen["commands"][0]
    assert (command["command"], command["text"], command["user_id"], command["channel_id"]) == (
        "/greenlight",
        "pending",
        "U0BOB",
        "C0DEPLOY",
    )
    def both_shown():
        texts = [e["text"] for e in ephemerals(sandbox, "C0DEPLOY", "U0BOB")]
        return texts if len(texts) == 2 else None

    texts = wait_for("respond() through the command's response_url", both_shown)
    # respond() runs right after ack(), so it may land before the ack is shown, as on Slack.
    assert sorted(texts) == ["Details follow", "pending: 2 pending"]
    assert ephemerals(sandbox, "C0DEPLOY", "U0ALICE") == []


def test_a_bolt_app_over_http_gets_home_events_clicks_and_commands(start_sandbox, bolt_server):
    # Only the interactivity URL is given (GREENLIGHT_SANDBOX_INTERACTIVITY_URL here, the PUT
    # below later); events and commands go to its origin's /slack/events and /slack/commands.
    sandbox = start_sandbox(interactivity_url="http://127.0.0.1:9/hooks/interactions")
    urls = sandbox.control("GET", "urls").json()
    assert (urls["events_url"], urls["commands_url"]) == ("http://127.0.0.1:9/slack/events", "http://127.0.0.1:9/slack/commands")
    app, seen = bolt_app(sandbox, signing_secret=sandbox.signing_secret)
    base, paths = bolt_server(app)
    sandbox.control("PUT", "interactivity_url", {"url": f"{base}/slack/interactions"})
    urls = sandbox.control("GET", "urls").json()
    assert (urls["events_url"], urls["commands_url"]) == (f"{base}/slack/events", f"{base}/slack/commands")

    exercise(sandbox, seen, "http")
    assert set(paths) == {"/slack/events", "/slack/interactions", "/slack/commands"}

    # Bolt refuses the sandbox's requests when the signing secret differs: the signature is real.
    wrong, wrong_seen = bolt_app(sandbox, signing_secret="not-the-secret")
    wrong_base, _ = bolt_server(wrong)
    sandbox.control("PUT", "urls", {"base": wrong_base})
    assert sandbox.control("POST", "home/open", {"user": "U0CAROL"}).json()["status"] == 401
    ran = sandbox.control("POST", "command", {"user": "U0CAROL", "channel": "deploy", "command": "/greenlight"}).json()
    assert ran["status"] == 401 and "dispatch_failed" in ran["response"]["message"]["text"]
    assert wrong_seen == {"home": [], "commands": [], "clicks": [], "approved": []}


def test_a_bolt_app_in_socket_mode_gets_home_events_clicks_and_commands(sandbox):
    app, seen = bolt_app(sandbox)
    handler = SocketModeHandler(app, sandbox.app_token)
    try:
        handler.connect()
        wait_for("a Socket Mode connection", lambda: sandbox.control("GET", "connections").json()["open"] == 1)
        exercise(sandbox, seen, "socket_mode")
    finally:
        handler.close()
