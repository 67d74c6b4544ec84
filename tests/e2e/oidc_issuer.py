"""An OIDC issuer on loopback for the end-to-end tests, written from OpenID Connect Discovery, RFC
7517 (JWK) and GitHub's documentation of Actions' OIDC tokens, with PyJWT and `cryptography`
(none of greenlight's code): a discovery document, a JWKS, tokens minted with GitHub's claim
shapes, and GitHub Actions' token endpoint (`ACTIONS_ID_TOKEN_REQUEST_URL`), which answers a GET
with `Authorization: bearer $ACTIONS_ID_TOKEN_REQUEST_TOKEN` and `&audience=` with
`{"value": "<jwt>"}`."""

from __future__ import annotations

import json
import secrets
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import jwt
from cryptography.hazmat.primitives.asymmetric import ec
from jwt.algorithms import ECAlgorithm


class Issuer:
    def __init__(self) -> None:
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.kid = "e2e-" + secrets.token_hex(4)
        self.request_token = "runner-" + secrets.token_hex(8)
        self.tokens_handed_out = 0
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def actions_request_url(self) -> str:
        return f"{self.url}/_apis/token?api-version=2.0"

    def github_claims(self, audience: str = "greenlight", **more) -> dict:
        now = int(time.time())
        return {
            "iss": self.url,
            "aud": audience,
            "sub": "repo:acme/shop:environment:production",
            "iat": now,
            "nbf": now,
            "exp": now + 300,
            "jti": secrets.token_hex(8),
            "repository": "acme/shop",
            "repository_owner_id": "1234",
            "ref": "refs/heads/main",
            "environment": "production",
            "workflow": "deploy.yml",
            "run_id": "4242",
            **more,
        }

    def mint(self, claims: dict, key=None, kid: str | None = None) -> str:
        return jwt.encode(claims, key or self.key, algorithm="ES256", headers={"kid": kid or self.kid})

    def stop(self) -> None:
        self.server.shutdown()

    def _handler(self):
        issuer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def _json(self, status: int, body: dict) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                url = urllib.parse.urlparse(self.path)
                if url.path == "/.well-known/openid-configuration":
                    self._json(200, {"issuer": issuer.url, "jwks_uri": f"{issuer.url}/keys"})
                elif url.path == "/keys":
                    jwk = json.loads(ECAlgorithm.to_jwk(issuer.key.public_key()))
                    jwk.update({"kid": issuer.kid, "alg": "ES256", "use": "sig"})
                    self._json(200, {"keys": [jwk]})
                elif url.path == "/_apis/token":
                    query = urllib.parse.parse_qs(url.query)
                    if self.headers.get("Authorization", "").lower() != f"bearer {issuer.request_token}".lower():
                        self._json(401, {"message": "bad request token"})
                        return
                    issuer.tokens_handed_out += 1
                    audience = query.get("audience", ["https://github.com/acme"])[0]
                    self._json(200, {"value": issuer.mint(issuer.github_claims(audience))})
                else:
                    self._json(404, {"message": "not found"})

        return Handler


def trust_config(issuer: Issuer, extra: str = "") -> str:
    """A config with the `deploy` workflow and a [[trust]] policy for `issuer`."""
    return f"""
[[workflow]]
name = "deploy"
channel = "#deploy"

[[trust]]
name = "github-acme"
issuer = "{issuer.url}"
audience = "greenlight"
when = 'claims.repository_owner_id == "1234"'
requester = "{{{{claims.repository}}}}@{{{{claims.ref}}}}"
{extra}
"""
