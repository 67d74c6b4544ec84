"""The sandbox as Slack's own Python SDK sees it: if python-slack-sdk can talk to it unchanged,
the sandbox speaks Slack's wire protocol, not just greenlight's reading of it."""

from __future__ import annotations

import json
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError
from slack_sdk.models.blocks import ActionsBlock, ButtonElement, SectionBlock
from slack_sdk.models.metadata import Metadata
from slack_sdk.signature import SignatureVerifier


def client(sandbox, token=None) -> WebClient:
    return WebClient(token=token or sandbox.bot_token, base_url=sandbox.api_url, timeout=10)


def approval_blocks(title: str, value: str):
    return [
        SectionBlock(text=f"*{title}*\nrequested by <@U0ALICE>"),
        ActionsBlock(
            block_id="decide",
            elements=[
                ButtonElement(text="Approve", action_id="approve", value=value, style="primary"),
                ButtonElement(text="Deny", action_id="deny", value=value, style="danger"),
            ],
        ),
    ]


def test_a_bot_posts_and_updates_a_message_with_the_sdk(sandbox):
    web = client(sandbox)
    me = web.auth_test()
    assert me["ok"] and me["user_id"] == "U0GREENBOT" and me["team_id"] == "T0SANDBOX"

    posted = web.chat_postMessage(
        channel="C0DEPLOY", text="Deploy api v1.2?", blocks=approval_blocks("Deploy api v1.2", "req_1")
    )
    assert posted["ok"] and posted["channel"] == "C0DEPLOY"
    ts = posted["ts"]
    stored = sandbox.message("C0DEPLOY", ts)
    assert stored["text"] == "Deploy api v1.2?"
    buttons = [e for b in stored["blocks"] if b["type"] == "actions" for e in b["elements"]]
    assert [(b["action_id"], b["value"], b["style"]) for b in buttons] == [
        ("approve", "req_1", "primary"),
        ("deny", "req_1", "danger"),
    ]

    updated = web.chat_update(
        channel="C0DEPLOY",
        ts=ts,
        text="Approved by <@U0BOB>",
        blocks=[SectionBlock(text=":white_check_mark: *Approved* by <@U0BOB>")],
    )
    assert updated["ok"] and updated["ts"] == ts
    stored = sandbox.message("C0DEPLOY", ts)
    assert stored["text"] == "Approved by <@U0BOB>" and stored["edits"] == 1
    assert all(b["type"] != "actions" for b in stored["blocks"])

    # A channel may be named; history is newest first, as Slack returns it.
    later = web.chat_postMessage(channel="#deploy", text="deploy finished")
    assert later["channel"] == "C0DEPLOY" and float(later["ts"]) > float(ts)
    history = web.conversations_history(channel="C0DEPLOY")
    assert [m["ts"] for m in history["messages"]] == [later["ts"], ts]
    assert history["messages"][1]["text"] == "Approved by <@U0BOB>"
    assert history["messages"][1]["bot_id"] and history["messages"][1]["user"] == "U0GREENBOT"

    # A reply in the thread is kept apart from the channel's top level, as in Slack.
    reply = web.chat_postMessage(channel="C0DEPLOY", thread_ts=ts, text="deploy started")
    replies = web.conversations_replies(channel="C0DEPLOY", ts=ts)
    assert [m["ts"] for m in replies["messages"]] == [ts, reply["ts"]]


def test_message_metadata_comes_back_only_when_history_asks_for_it(sandbox):
    web = client(sandbox)
    meta = {"event_type": "approval_requested", "event_payload": {"request_id": "req_7", "amount": 120}}
    posted = web.chat_postMessage(channel="C0DEPLOY", text="Deploy?", metadata=meta)
    assert posted["message"]["metadata"] == meta
    assert sandbox.message("C0DEPLOY", posted["ts"])["metadata"] == meta

    with_flag = web.conversations_history(channel="C0DEPLOY", include_all_metadata=True)
    assert with_flag["messages"][0]["metadata"] == meta
    without = web.conversations_history(channel="C0DEPLOY")
    assert "metadata" not in without["messages"][0]

    # The SDK's Metadata model, and chat.update replacing it.
    changed = Metadata(event_type="approval_decided", event_payload={"request_id": "req_7", "verdict": "approve"})
    updated = web.chat_update(channel="C0DEPLOY", ts=posted["ts"], text="Approved", metadata=changed)
    assert updated["message"]["metadata"] == changed.to_dict()
    one = web.conversations_history(channel="C0DEPLOY", latest=posted["ts"], inclusive=True, limit=1, include_all_metadata=True)
    assert [m["metadata"]["event_type"] for m in one["messages"]] == ["approval_decided"]


def test_history_pages_the_way_the_sdk_iterates_them(sandbox):
    web = client(sandbox)
    posted = [web.chat_postMessage(channel="C0OPS", text=f"note {i}")["ts"] for i in range(5)]
    # Iterating a SlackResponse follows response_metadata.next_cursor until it runs out (each
    # step reuses the same response object, so read a page while it is current).
    pages = [([m["ts"] for m in page["messages"]], page["has_more"]) for page in web.conversations_history(channel="C0OPS", limit=2)]
    assert [len(ts) for ts, _ in pages] == [2, 2, 1]
    assert [more for _, more in pages] == [True, True, False]
    assert [ts for page, _ in pages for ts in page] == posted[::-1]
    between = web.conversations_history(channel="C0OPS", oldest=posted[0], latest=posted[4])
    assert [m["ts"] for m in between["messages"]] == posted[3:0:-1]


def test_channels_and_users_can_be_looked_up(sandbox):
    web = client(sandbox)
    assert web.conversations_info(channel="C0DEPLOY")["channel"]["name"] == "deploy"
    names = {c["name"] for c in web.conversations_list()["channels"]}
    assert {"general", "deploy", "payments", "ops"} <= names

    alice = web.users_info(user="U0ALICE")["user"]
    assert alice["name"] == "alice"
    assert web.users_lookupByEmail(email=alice["profile"]["email"])["user"]["id"] == "U0ALICE"
    members = {u["id"] for u in web.users_list()["members"]}
    assert {"U0ALICE", "U0BOB", "U0CAROL"} <= members
    assert web.usergroups_users_list(usergroup="S0SRE")["users"] == ["U0CAROL", "U0DAVE"]

    # SlackApiError carries Slack's error name for the usual mistakes.
    with pytest.raises(SlackApiError) as e:
        web.users_info(user="U0NOBODY")
    assert e.value.response["error"] == "user_not_found"
    with pytest.raises(SlackApiError) as e:
        web.chat_postMessage(channel="C0NOWHERE", text="hi")
    assert e.value.response["error"] == "channel_not_found"


def test_a_bad_token_is_refused_with_invalid_auth(sandbox):
    with pytest.raises(SlackApiError) as e:
        client(sandbox, token="xoxb-not-the-token").chat_postMessage(channel="C0DEPLOY", text="hi")
    assert e.value.response["error"] == "invalid_auth"
    with pytest.raises(SlackApiError) as e:
        WebClient(base_url=sandbox.api_url).auth_test()
    assert e.value.response["error"] == "not_authed"
    # An app-level token is for apps.connections.open only.
    with pytest.raises(SlackApiError) as e:
        client(sandbox, token=sandbox.app_token).chat_postMessage(channel="C0DEPLOY", text="hi")
    assert e.value.response["error"] == "not_allowed_token_type"
    assert sandbox.messages("C0DEPLOY") == []


def test_an_injected_rate_limit_looks_like_slacks_to_the_sdk(sandbox):
    r = sandbox.control("POST", "faults", {"method": "chat.postMessage", "rate_limit_retry_after": 7})
    assert r.status == 204, r.body
    web = client(sandbox)
    with pytest.raises(SlackApiError) as e:
        web.chat_postMessage(channel="C0DEPLOY", text="first")
    assert e.value.response.status_code == 429
    assert e.value.response["error"] == "ratelimited"
    assert e.value.response.headers["Retry-After"] == "7"
    # One use by default: the next call goes through.
    assert web.chat_postMessage(channel="C0DEPLOY", text="second")["ok"]


class Receiver:
    """A tiny interactivity endpoint: records each request and answers 200."""

    def __init__(self):
        self.requests: list[tuple[dict, bytes]] = []
        received = self.requests

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                # Lowercase names: HTTP headers are case-insensitive and the sandbox (hyper) sends them so.
                received.append(({k.lower(): v for k, v in self.headers.items()}, body))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/slack/interactions"
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.close()


def test_a_click_is_a_signed_request_the_sdk_verifies(start_sandbox, receiver):
    sandbox = start_sandbox(interactivity_url=receiver.url)
    posted = client(sandbox).chat_postMessage(
        channel="C0DEPLOY", text="Deploy?", blocks=approval_blocks("Deploy api v1.2", "req_2")
    )

    outcome = sandbox.click("C0DEPLOY", posted["ts"], "approve", "U0BOB")
    assert outcome["transport"] == "http" and outcome["status"] == 200
    assert len(receiver.requests) == 1
    headers, body = receiver.requests[0]
    assert headers["content-type"] == "application/x-www-form-urlencoded"

    verifier = SignatureVerifier(signing_secret=sandbox.signing_secret)
    assert verifier.is_valid_request(body, headers)
    tampered = body.replace(b"U0BOB", b"U0EVE")
    assert tampered != body and not verifier.is_valid_request(tampered, headers)
    assert not SignatureVerifier(signing_secret="another-secret").is_valid_request(body, headers)
    older = dict(headers, **{"x-slack-request-timestamp": str(int(headers["x-slack-request-timestamp"]) - 1)})
    assert not verifier.is_valid_request(body, older)
    # The signature is fresh: within the SDK's 5-minute window of now.
    assert abs(time.time() - int(headers["x-slack-request-timestamp"])) < 60

    payload = json.loads(urllib.parse.parse_qs(body.decode())["payload"][0])
    assert payload["type"] == "block_actions"
    assert payload["user"]["id"] == "U0BOB"
    assert payload["container"] == {
        "type": "message",
        "message_ts": posted["ts"],
        "channel_id": "C0DEPLOY",
        "is_ephemeral": False,
    }
    action = payload["actions"][0]
    assert (action["action_id"], action["block_id"], action["value"]) == ("approve", "decide", "req_2")
    assert payload["message"]["ts"] == posted["ts"]
