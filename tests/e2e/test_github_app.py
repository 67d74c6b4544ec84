"""greenlight as a GitHub App's deployment protection rule, checked by third parties: a fake of
GitHub's REST API written here from GitHub's documentation verifies greenlight's App JWT with
PyJWT against the App's public key (a key pair made here, not the Rust tests' fixture), and the
webhooks are signed with Python's hmac as GitHub signs them. Runs against `greenlight dev`."""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import threading
import time
import urllib.error
import urllib.request
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from conftest import free_port, start_dev, wait_for

APP_ID = 918273
INSTALLATION = 31337
REPO = "acme/api"


class FakeGithub:
    """`POST /app/installations/{id}/access_tokens` (the App JWT: RS256, iss the App id, at most
    ten minutes) and `POST /repos/{owner}/{repo}/actions/runs/{run}/deployment_protection_rule`
    (an installation token; 204)."""

    def __init__(self, public_key):
        self.public_key = public_key
        self.tokens: dict[str, float] = {}
        self.jwt_claims: list[dict] = []
        self.refused: list[str] = []
        self.reviews: list[dict] = []
        self.lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def answer(self, status: int, body: dict | None = None):
                data = json.dumps(body).encode() if body is not None else b""
                self.send_response(status)
                if data:
                    self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self):
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length)
                auth = self.headers.get("Authorization", "")
                bearer = auth[len("Bearer ") :] if auth.startswith("Bearer ") else ""
                parts = self.path.strip("/").split("/")
                if parts[:2] == ["app", "installations"] and parts[3:] == ["access_tokens"]:
                    try:
                        claims = jwt.decode(
                            bearer,
                            fake.public_key,
                            algorithms=["RS256"],
                            options={"require": ["iat", "exp", "iss"]},
                        )
                    except jwt.InvalidTokenError as e:
                        with fake.lock:
                            fake.refused.append(str(e))
                        return self.answer(401, {"message": f"A JSON web token could not be decoded: {e}"})
                    with fake.lock:
                        fake.jwt_claims.append(claims)
                    if str(claims["iss"]) != str(APP_ID) or claims["exp"] - claims["iat"] > 600:
                        return self.answer(401, {"message": "'Expiration time' claim ('exp') is too far in the future"})
                    if int(parts[2]) != INSTALLATION:
                        return self.answer(404, {"message": "Not Found"})
                    token = "ghs_" + secrets.token_hex(16)
                    expires = datetime.now(timezone.utc) + timedelta(hours=1)
                    with fake.lock:
                        fake.tokens[token] = expires.timestamp()
                    return self.answer(
                        201,
                        {"token": token, "expires_at": expires.strftime("%Y-%m-%dT%H:%M:%SZ"), "permissions": {"deployments": "write"}},
                    )
                if len(parts) == 7 and parts[0] == "repos" and parts[3:5] == ["actions", "runs"] and parts[6] == "deployment_protection_rule":
                    with fake.lock:
                        live = fake.tokens.get(bearer, 0) > time.time()
                    if not live:
                        return self.answer(401, {"message": "Bad credentials"})
                    body = json.loads(raw)
                    with fake.lock:
                        fake.reviews.append({"repo": f"{parts[1]}/{parts[2]}", "run": int(parts[5]), "body": body})
                    return self.answer(204)
                return self.answer(404, {"message": "Not Found"})

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()


def sign(secret: str, body: bytes) -> str:
    """GitHub's X-Hub-Signature-256: sha256= and the hex HMAC-SHA256 of the body."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


@pytest.fixture
def github_app(spawn, tmp_path):
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    fake = FakeGithub(key.public_key())
    secret = secrets.token_hex(20)
    config = tmp_path / "greenlight.toml"
    config.write_text(
        f"""
[github]
app_id = {APP_ID}
webhook_secret = "${{E2E_GITHUB_SECRET}}"
api_url = "{fake.url}"

[[github.environment]]
name = "production"
repositories = ["acme/*"]
workflow = "deploy"

[[workflow]]
name = "deploy"
channel = "#deploy"
"""
    )
    dev = start_dev(
        spawn,
        tmp_path,
        GREENLIGHT_CONFIG=str(config),
        GREENLIGHT_GITHUB_PRIVATE_KEY=pem,
        E2E_GITHUB_SECRET=secret,
    )
    yield dev, fake, secret
    fake.close()


def webhook(dev, secret: str, event: str, payload: dict, signature: str | None = None):
    body = json.dumps(payload).encode()
    headers = {
        "Content-Type": "application/json",
        "X-GitHub-Event": event,
        "X-GitHub-Delivery": secrets.token_hex(8),
        "X-Hub-Signature-256": signature if signature is not None else sign(secret, body),
    }
    # conftest's http() encodes JSON itself; the signature is over these exact bytes.
    req = urllib.request.Request(f"{dev.api}/github/webhook", data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, json.loads(r.read() or b"null")
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null")


def payload(fake: FakeGithub, run: int) -> dict:
    return {
        "action": "requested",
        "environment": "production",
        "event": "workflow_dispatch",
        "ref": "refs/heads/main",
        "sha": "a" * 40,
        "deployment_callback_url": f"{fake.url}/repos/{REPO}/actions/runs/{run}/deployment_protection_rule",
        "deployment": {"id": 1, "creator": {"login": "hubot"}},
        "repository": {"full_name": REPO, "html_url": f"https://github.com/{REPO}"},
        "installation": {"id": INSTALLATION},
        "sender": {"login": "hubot"},
    }


def test_a_deployment_waits_in_slack_and_the_click_approves_it_on_github(github_app):
    dev, fake, secret = github_app
    # Anything not signed with the secret: 401, and nothing is created.
    status, body = webhook(dev, secret, "deployment_protection_rule", payload(fake, 77), signature=sign("wrong", b"{}"))
    assert status == 401 and body["error"]["code"] == "invalid_signature", body
    assert dev.call("GET", "/v1/requests").json()["requests"] == []

    status, body = webhook(dev, secret, "ping", {"zen": "Design for failure."})
    assert status == 200, body
    status, first = webhook(dev, secret, "deployment_protection_rule", payload(fake, 77))
    assert status == 200, first
    status, again = webhook(dev, secret, "deployment_protection_rule", payload(fake, 77))
    assert status == 200 and again["request"] == first["request"], again
    request_id = first["request"]
    request = dev.call("GET", f"/v1/requests/{request_id}").json()
    assert request["title"] == "Deploy acme/api refs/heads/main to production"
    assert request["params"]["run_id"] == 77 and request["requester"] == "hubot"

    ts = wait_for("the message", lambda: (dev.call("GET", f"/v1/requests/{request_id}").json().get("slack") or {}).get("ts"))
    wait_for("the status report", lambda: len(fake.reviews) >= 1)
    assert "state" not in fake.reviews[0]["body"] and fake.reviews[0]["body"]["environment_name"] == "production"
    click = dev.sandbox("POST", "click", {"channel": "C0DEPLOY", "message_ts": ts, "action_id": "greenlight.approve", "user": "U0BOB"})
    assert click.status == 200, click.body
    wait_for("the review", lambda: len(fake.reviews) >= 2)
    review = fake.reviews[1]
    assert review["repo"] == REPO and review["run"] == 77
    assert review["body"]["state"] == "approved" and review["body"]["environment_name"] == "production"
    assert review["body"]["comment"].startswith("Approved by "), review
    assert len(review["body"]["comment"]) <= 1024

    # PyJWT checked every App JWT with the public key; each lived at most ten minutes.
    assert fake.refused == [], fake.refused
    assert fake.jwt_claims, "greenlight bought a token"
    for claims in fake.jwt_claims:
        assert str(claims["iss"]) == str(APP_ID)
        assert claims["exp"] - claims["iat"] <= 600
        assert claims["iat"] <= time.time() + 1
    # One token for both calls.
    assert len(fake.tokens) == 1
    shown = wait_for(
        "the review on the request",
        lambda: (r := dev.call("GET", f"/v1/requests/{request_id}").json())["github"]["review"] == "approved" and r,
    )
    assert shown["github"] == {"repository": REPO, "run_id": 77, "environment": "production", "review": "approved"}
    # The redelivery made no second message.
    posted = [m for m in dev.sandbox("GET", "messages?channel=C0DEPLOY").json() if not m.get("thread_ts")]
    assert len(posted) == 1, posted
