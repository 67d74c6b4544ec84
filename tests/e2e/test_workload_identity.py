"""Workload identity from outside: PyJWT mints OIDC tokens (ES256, GitHub's claim shapes) from an
issuer on loopback, `greenlight dev` configured with a [[trust]] policy for it takes them as it
takes API keys, and refuses forged ones (`alg: none`, HS256 keyed with the public key, another
key, another audience) with 401 `invalid_token`; the decision's receipt names the subject."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from conftest import http, start_dev, wait_for
from oidc_issuer import Issuer, trust_config


@pytest.fixture
def issuer():
    i = Issuer()
    yield i
    i.stop()


@pytest.fixture
def trusted_dev(spawn, tmp_path, issuer):
    config = tmp_path / "greenlight.toml"
    config.write_text(trust_config(issuer))
    return start_dev(spawn, tmp_path, GREENLIGHT_CONFIG=str(config))


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def hs256(claims: dict, secret: bytes, kid: str) -> str:
    head = b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": kid}).encode())
    body = b64(json.dumps(claims).encode())
    sig = hmac.new(secret, f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{b64(sig)}"


def call(dev, token: str, method: str, path: str, body=None):
    return http(method, f"{dev.api}{path}", body, {"Authorization": f"Bearer {token}"})


def test_a_pyjwt_token_asks_and_the_request_says_who_it_proved_to_be(trusted_dev, issuer):
    token = issuer.mint(issuer.github_claims())
    r = call(trusted_dev, token, "POST", "/v1/requests", {"title": "Deploy shop", "requester": "mallory"})
    assert r.status == 201, r.body
    created = r.json()
    assert created["requester"] == "acme/shop@refs/heads/main"
    assert created["identity"]["trust"] == "github-acme"
    assert created["identity"]["subject"] == "repo:acme/shop:environment:production"
    assert "jti" not in created["identity"]["claims"]

    ts = wait_for(
        "the message",
        lambda: (trusted_dev.call("GET", f"/v1/requests/{created['id']}").json().get("slack") or {}).get("ts"),
    )
    message = next(m for m in trusted_dev.sandbox("GET", "messages?channel=C0DEPLOY&all=true").json() if m["ts"] == ts)
    shown = str(message["blocks"])
    assert "acme/shop@refs/heads/main · workflow deploy.yml · run 4242 (verified by github-acme)" in shown
    click = trusted_dev.sandbox(
        "POST", "click", {"channel": "C0DEPLOY", "message_ts": ts, "action_id": "greenlight.approve", "user": "U0BOB"}
    )
    assert click.status == 200, click.body
    receipt = wait_for(
        "the receipt", lambda: trusted_dev.call("GET", f"/v1/requests/{created['id']}").json().get("receipt")
    )
    jwks = jwt.PyJWKClient(f"{trusted_dev.api}/.well-known/jwks.json")
    claims = jwt.decode(
        receipt, jwks.get_signing_key_from_jwt(receipt).key, algorithms=["EdDSA"], options={"verify_aud": False}
    )
    assert claims["identity_sub"] == "repo:acme/shop:environment:production"
    assert claims["status"] == "approved"


def test_forged_and_mistargeted_tokens_are_refused_with_the_failed_check(trusted_dev, issuer):
    claims = issuer.github_claims()
    public_pem = issuer.key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    stranger = ec.generate_private_key(ec.SECP256R1())
    now = int(time.time())
    cases = [
        (jwt.encode(claims, None, algorithm="none"), "algorithm"),
        # The classic confusion: HS256 keyed with the issuer's public key bytes (signed by hand:
        # PyJWT itself refuses to use a PEM key as an HMAC secret).
        (hs256(claims, public_pem, issuer.kid), "algorithm"),
        (issuer.mint(claims, key=stranger), "signature"),
        (issuer.mint(issuer.github_claims(audience="someone-else")), "audience"),
        (issuer.mint({**claims, "iat": now - 900, "nbf": now - 900, "exp": now - 300}), "expired"),
        (issuer.mint({**claims, "repository_owner_id": "9999"}), "when is false"),
    ]
    for token, reason in cases:
        r = call(trusted_dev, token, "POST", "/v1/requests", {"title": "Forged"})
        assert r.status == 401, (reason, r.body)
        error = r.json()["error"]
        assert error["code"] == "invalid_token", error
        assert reason in error["message"], (reason, error)
    listed = trusted_dev.call("GET", "/v1/requests").json()["requests"]
    assert listed == [], "nothing was created"
    assert "Forged" not in trusted_dev.child.log()
