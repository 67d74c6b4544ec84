"""A decision receipt checked by a third party: the README's "Verifying a decision" snippet (read
from README.md, not copied here) run with PyJWT against `greenlight dev`'s JWKS, accepting the
approved params and refusing others, an edited receipt and a denied request's receipt."""

from __future__ import annotations

import re

import pytest

from conftest import REPO, wait_for


def readme_snippet() -> dict:
    text = (REPO / "README.md").read_text()
    section = text[text.index("## Verifying a decision") :]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    scope: dict = {}
    exec(compile(code, "README.md", "exec"), scope)  # noqa: S102 - the README's own code
    return scope


def decide(dev, params: dict, action: str) -> str:
    r = dev.call("POST", "/v1/requests", {"workflow": "deploy", "title": "Pay invoice", "params": params})
    assert r.status == 201, r.body
    request_id = r.json()["id"]
    ts = wait_for(
        "the message",
        lambda: (dev.call("GET", f"/v1/requests/{request_id}").json().get("slack") or {}).get("ts"),
    )
    click = dev.sandbox("POST", "click", {"channel": "C0DEPLOY", "message_ts": ts, "action_id": action, "user": "U0BOB"})
    assert click.status == 200, click.body
    got = wait_for("the decision", lambda: dev.call("GET", f"/v1/requests/{request_id}").json().get("receipt"))
    receipt = dev.call("GET", f"/v1/requests/{request_id}/receipt").json()["receipt"]
    assert receipt == got
    return receipt


def test_the_readme_snippet_verifies_a_receipt_and_refuses_what_it_should(dev):
    verify_receipt = readme_snippet()["verify_receipt"]
    jwks_url = f"{dev.api}/.well-known/jwks.json"
    params = {"amount": 1200, "to": "ACME", "lines": [{"sku": "é-1", "qty": 2}]}
    receipt = decide(dev, params, "greenlight.approve")
    claims = verify_receipt(receipt, jwks_url, {"to": "ACME", "lines": [{"qty": 2, "sku": "é-1"}], "amount": 1200})
    assert claims["status"] == "approved" and claims["decided_by"] == "U0BOB"

    with pytest.raises(ValueError, match="not the params"):
        verify_receipt(receipt, jwks_url, {**params, "to": "EVIL"})
    head, body, sig = receipt.split(".")
    edited = f"{head}.{body[:-2]}{'AA' if body[-2:] != 'AA' else 'BB'}.{sig}"
    import jwt

    with pytest.raises(jwt.InvalidTokenError):
        verify_receipt(edited, jwks_url, params)
    denied = decide(dev, params, "greenlight.deny")
    with pytest.raises(ValueError, match="not approved: denied"):
        verify_receipt(denied, jwks_url, params)
