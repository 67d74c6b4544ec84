"""A Slack app written with Bolt for Python, unchanged except for the API base URL, gets the
sandbox's button clicks over HTTP (signed) and over Socket Mode, and acks them in time."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from slack_bolt import App, BoltRequest
from slack_bolt.adapter.socket_mode import SocketModeHandler
from slack_sdk import WebClient
from slack_sdk.models.blocks import ActionsBlock, ButtonElement, SectionBlock

from conftest import wait_for


def bolt_app(sandbox, **kwargs) -> tuple[App, list[dict]]:
    """A Bolt app whose Approve handler acks, records the payload and rewrites the message."""
    web = WebClient(token=sandbox.bot_token, base_url=sandbox.api_url, timeout=10)
    app = App(client=web, **kwargs)  # App() calls auth.test on the sandbox here
    clicks: list[dict] = []

    @app.action("approve")
    def approve(ack, body, client):
        ack()
        clicks.append(body)
        client.chat_update(
            channel=body["channel"]["id"],
            ts=body["container"]["message_ts"],
            text=f"Approved by <@{body['user']['id']}>",
            blocks=[SectionBlock(text=f":white_check_mark: *Approved* by <@{body['user']['id']}>")],
        )

    return app, clicks


def post_approval(sandbox) -> str:
    web = WebClient(token=sandbox.bot_token, base_url=sandbox.api_url, timeout=10)
    posted = web.chat_postMessage(
        channel="#deploy",
        text="Deploy?",
        blocks=[
            SectionBlock(text="*Deploy api v1.2*"),
            ActionsBlock(elements=[ButtonElement(text="Approve", action_id="approve", value="req_1")]),
        ],
    )
    return posted["ts"]


def wait_approved(sandbox, ts: str, user: str) -> dict:
    return wait_for(
        "the Bolt app's chat.update",
        lambda: (m := sandbox.message("C0DEPLOY", ts)) and m["text"] == f"Approved by <@{user}>" and m,
    )


@pytest.fixture
def bolt_http_endpoint():
    """bolt_http_endpoint(app) serves a Bolt app over HTTP on a free port; returns its URL."""
    servers = []

    def serve(app: App) -> str:
        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", "0"))).decode()
                headers = {k.lower(): [v] for k, v in self.headers.items()}
                response = app.dispatch(BoltRequest(body=body, headers=headers))
                data = (response.body or "").encode()
                self.send_response(response.status)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_port}/slack/events"

    yield serve
    for s in servers:
        s.shutdown()
        s.server_close()


def test_a_bolt_app_over_http_verifies_and_handles_a_click(start_sandbox, bolt_http_endpoint):
    sandbox = start_sandbox()
    app, clicks = bolt_app(sandbox, signing_secret=sandbox.signing_secret)
    sandbox.control("PUT", "interactivity_url", {"url": bolt_http_endpoint(app)})
    ts = post_approval(sandbox)

    outcome = sandbox.click("C0DEPLOY", ts, "approve", "U0CAROL")
    assert (outcome["transport"], outcome["status"], outcome["timed_out"]) == ("http", 200, False)
    assert len(clicks) == 1 and clicks[0]["user"]["id"] == "U0CAROL"
    wait_approved(sandbox, ts, "U0CAROL")

    # The same app with the wrong signing secret refuses the sandbox's request: Bolt checks it.
    wrong, wrong_clicks = bolt_app(sandbox, signing_secret="not-the-secret")
    sandbox.control("PUT", "interactivity_url", {"url": bolt_http_endpoint(wrong)})
    ts = post_approval(sandbox)
    outcome = sandbox.click("C0DEPLOY", ts, "approve", "U0CAROL")
    assert outcome["status"] == 401 and wrong_clicks == []


def test_a_bolt_app_in_socket_mode_receives_and_acks_a_click(sandbox):
    app, clicks = bolt_app(sandbox)
    # The handler's socket-mode client calls apps.connections.open through the app's WebClient,
    # so the base_url given there points it at the sandbox.
    handler = SocketModeHandler(app, sandbox.app_token)
    try:
        handler.connect()
        wait_for("a Socket Mode connection", lambda: sandbox.control("GET", "connections").json()["open"] == 1)
        ts = post_approval(sandbox)

        outcome = sandbox.click("C0DEPLOY", ts, "approve", "U0BOB")
        assert (outcome["transport"], outcome["status"], outcome["timed_out"]) == ("socket_mode", 200, False)
        assert len(clicks) == 1
        assert clicks[0]["user"]["id"] == "U0BOB" and clicks[0]["actions"][0]["value"] == "req_1"
        wait_approved(sandbox, ts, "U0BOB")

        # Slack asks apps to reconnect now and then; the SDK opens a new connection and carries on.
        # (The SDK switches to the new connection only after closing the old one, which can take
        # it a few seconds; wait for its own notion of the session, not just the sandbox's.)
        calls_before = len(sandbox.control("GET", "calls?method=apps.connections.open").json())
        old_session = handler.client.session_id()
        assert sandbox.control("POST", "disconnect", {"reason": "refresh_requested"}).json()["disconnected"] == 1
        wait_for(
            "the SDK to reconnect",
            lambda: handler.client.session_id() != old_session
            and handler.client.is_connected()
            and len(sandbox.control("GET", "calls?method=apps.connections.open").json()) == calls_before + 1
            and sandbox.control("GET", "connections").json()["open"] == 1,
            timeout=15,
        )
        ts = post_approval(sandbox)
        outcome = sandbox.click("C0DEPLOY", ts, "approve", "U0DAVE")
        assert (outcome["transport"], outcome["status"]) == ("socket_mode", 200)
        wait_approved(sandbox, ts, "U0DAVE")
    finally:
        handler.close()
