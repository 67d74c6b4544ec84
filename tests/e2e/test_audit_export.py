"""The audit log checked by a third party: `greenlight audit export` of what `greenlight dev`
wrote, verified by the Python verifier printed in docs/operations.md (read from that file, not
copied here), which must also catch an edited line."""

from __future__ import annotations

import json
import re
import subprocess
import sys

from conftest import REPO, greenlight_bin, hermetic_env, wait_for


def readme_verifier() -> str:
    text = (REPO / "docs" / "operations.md").read_text()
    section = text[text.index("### Verifying an export") :]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_an_export_verifies_with_the_readme_script_and_an_edit_does_not(dev, tmp_path):
    # Some history: requests created, one approved, one denied, with tricky text.
    ids = []
    for title in ['Deploy "api" v1 — ü', "Drop table\nusers"]:
        r = dev.call("POST", "/v1/requests", {"workflow": "deploy", "title": title, "params": {"amount": 120.5}})
        assert r.status == 201, r.body
        ids.append(r.json()["id"])
    for request_id, action in zip(ids, ["greenlight.approve", "greenlight.deny"]):
        ts = wait_for(
            "the message",
            lambda: (dev.call("GET", f"/v1/requests/{request_id}").json().get("slack") or {}).get("ts"),
        )
        click = dev.sandbox("POST", "click", {"channel": "C0DEPLOY", "message_ts": ts, "action_id": action, "user": "U0BOB"})
        assert click.status == 200, click.body
    wait_for(
        "the chain to catch up",
        lambda: all(e.get("hash") for e in dev.call("GET", "/v1/audit?limit=1000").json()["events"]) or None,
    )
    env = hermetic_env(GREENLIGHT_DATABASE_URL=f"sqlite:{tmp_path / 'greenlight.db'}")
    export = subprocess.run(
        [str(greenlight_bin()), "audit", "export"], env=env, capture_output=True, text=True, timeout=30
    )
    assert export.returncode == 0, export.stderr
    lines = export.stdout.splitlines()
    assert len(lines) >= 4
    path = tmp_path / "audit.jsonl"
    path.write_text(export.stdout, encoding="utf-8")
    script = tmp_path / "verify.py"
    script.write_text(readme_verifier())
    ok = subprocess.run([sys.executable, str(script), str(path)], capture_output=True, text=True, timeout=30)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert f"{len(lines)} entries verify" in ok.stdout

    # An edit anywhere is caught at that line.
    entries = [json.loads(line) for line in lines]
    entries[2]["actor"] = "U0MALLORY"
    path.write_text("\n".join(json.dumps(e, ensure_ascii=False) for e in entries) + "\n", encoding="utf-8")
    bad = subprocess.run([sys.executable, str(script), str(path)], capture_output=True, text=True, timeout=30)
    assert bad.returncode != 0
    assert f"line 3: entry {entries[2]['id']}" in bad.stderr, bad.stderr
    # A dropped line too.
    del entries[2]
    entries[2]["actor"] = json.loads(lines[3])["actor"]
    path.write_text("\n".join(json.dumps(e, ensure_ascii=False) for e in entries) + "\n", encoding="utf-8")
    gone = subprocess.run([sys.executable, str(script), str(path)], capture_output=True, text=True, timeout=30)
    assert gone.returncode != 0 and "line 3:" in gone.stderr, gone.stderr
