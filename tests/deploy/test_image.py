"""The container image scripts/image builds (greenlight:VERSION): exactly a static greenlight, CA
certificates and a user; its config read back with `buildah inspect`; its compressed size; and
its root filesystem run in a chroot as uid 65532, as a container runtime would run it: the
README's quick start against `greenlight dev`, and `greenlight serve` on PostgreSQL reaching
Slack (the sandbox, also from the image) by name."""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import stat
import subprocess
import time
from pathlib import Path

import yaml
from conftest import REPO, Child, free_port, http, wait_for, wait_listening, workspace_version

MB = 1_000_000
SIZE_BOUND = 25 * MB
USER = (65532, 65532)
APPROVE = "greenlight.approve"
EXPORT = re.compile(r"^\s*export GREENLIGHT_URL=(\S+) GREENLIGHT_TOKEN=(gl_[0-9a-f]+)\s*$", re.M)


def tree(root: Path) -> dict[str, tuple[str, int, int, int]]:
    """Every path under `root` (as "/etc/passwd"): its kind, owner, group and permission bits."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            st = path.lstat()
            kind = "dir" if stat.S_ISDIR(st.st_mode) else "file" if stat.S_ISREG(st.st_mode) else "other"
            out["/" + str(path.relative_to(root))] = (kind, st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode))
    return out


def dynamic_dependencies(path: Path) -> tuple[bool, int]:
    """What the ELF file asks of a dynamic loader: whether it names one (PT_INTERP), and how many
    shared libraries it needs (DT_NEEDED entries of its PT_DYNAMIC segment)."""
    data = path.read_bytes()
    assert data[:4] == b"\x7fELF" and data[4] == 2 and data[5] == 1, "not a 64-bit little-endian ELF file"
    u = lambda at, n: int.from_bytes(data[at : at + n], "little")  # noqa: E731
    phoff, phentsize, phnum = u(32, 8), u(54, 2), u(56, 2)
    interp, needed = False, 0
    for i in range(phnum):
        ph = phoff + i * phentsize
        if u(ph, 4) == 3:  # PT_INTERP
            interp = True
        elif u(ph, 4) == 2:  # PT_DYNAMIC: (d_tag, d_val) pairs
            offset, size = u(ph + 8, 8), u(ph + 32, 8)
            needed += sum(1 for at in range(offset, offset + size, 16) if u(at, 8) == 1)  # DT_NEEDED
    return interp, needed


def test_the_image_holds_a_static_greenlight_certificates_and_a_user_and_nothing_else(rootfs):
    files = tree(rootfs.path)
    root = (0, 0)
    assert files == {
        "/greenlight": ("file", *root, 0o755),
        "/etc": ("dir", *root, 0o755),
        "/etc/passwd": ("file", *root, 0o644),
        "/etc/group": ("file", *root, 0o644),
        "/etc/nsswitch.conf": ("file", *root, 0o644),
        "/etc/ssl": ("dir", *root, 0o755),
        "/etc/ssl/certs": ("dir", *root, 0o755),
        "/etc/ssl/certs/ca-certificates.crt": ("file", *root, 0o644),
        "/data": ("dir", *USER, 0o755),
    }, json.dumps(files, indent=1)

    binary = rootfs.path / "greenlight"
    # +crt-static builds a static-pie (address randomisation kept): ldd says "statically linked"
    # of it, and "not a dynamic executable" of a non-PIE static one.
    ldd = subprocess.run(["ldd", str(binary)], capture_output=True, text=True)
    said = (ldd.stdout + ldd.stderr).strip()
    assert said in ("statically linked", "not a dynamic executable"), said
    assert dynamic_dependencies(binary) == (False, 0), "the binary needs a dynamic loader or libraries"

    assert (rootfs.path / "etc/passwd").read_text().startswith("greenlight:x:65532:65532:")
    assert (rootfs.path / "etc/group").read_text().startswith("greenlight:x:65532:")
    certs = (rootfs.path / "etc/ssl/certs/ca-certificates.crt").read_text()
    assert certs.count("-----BEGIN CERTIFICATE-----") > 100, "the CA bundle is missing or tiny"


def test_its_config_runs_serve_as_uid_65532_on_8080_with_data_as_a_volume(image):
    c = image.config
    assert c["User"] == "65532:65532"
    assert c["Entrypoint"] == ["/greenlight"]
    assert c["Cmd"] == ["serve"]
    assert set(c["ExposedPorts"]) == {"8080/tcp"}
    assert set(c["Volumes"]) == {"/data"}
    assert c["WorkingDir"] == "/data"
    env = image.env
    assert env["GREENLIGHT_LISTEN"] == "0.0.0.0:8080"
    assert env["GREENLIGHT_DATABASE_URL"] == "sqlite:/data/greenlight.db"
    assert not any(k.startswith("SLACK_") for k in env), "no Slack setting is baked in"

    labels = c["Labels"]
    assert labels["org.opencontainers.image.version"] == workspace_version()
    assert image.tag.endswith(f"greenlight:{workspace_version()}")
    assert labels["org.opencontainers.image.licenses"] == "Apache-2.0"
    assert labels["org.opencontainers.image.source"]
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True, check=True)
    assert labels["org.opencontainers.image.revision"].removesuffix("-dirty") == head.stdout.strip()


def test_its_compressed_size_is_under_25_mb(image, tmp_path, capsys):
    # What a registry stores and a node pulls: the image pushed as an OCI layout, its layers
    # gzip-compressed as `buildah push` does for a registry.
    layout = tmp_path / "oci"
    subprocess.run(
        ["buildah", "push", "--quiet", "--compression-format", "gzip", image.tag, f"oci:{layout}"],
        check=True, capture_output=True, timeout=300,
    )

    def blob(digest: str) -> Path:
        return layout / "blobs" / digest.replace(":", "/")

    index = json.loads((layout / "index.json").read_text())
    manifest = json.loads(blob(index["manifests"][0]["digest"]).read_text())
    layers = manifest["layers"]
    assert all(layer["mediaType"].endswith("tar+gzip") for layer in layers), layers
    compressed = sum(layer["size"] for layer in layers) + manifest["config"]["size"]
    with capsys.disabled():
        print(f"\nimage {image.tag}: {compressed / MB:.1f} MB compressed ({len(layers)} layer(s))")
    assert compressed < SIZE_BOUND, f"{compressed / MB:.1f} MB compressed, over {SIZE_BOUND / MB:.0f} MB"


def sandbox_messages(page: str, channel: str = "C0DEPLOY") -> list[dict]:
    r = http("GET", f"{page}/_sandbox/messages?channel={channel}&all=true")
    assert r.status == 200, r.body
    return r.json()


def pending_message(page: str, title: str) -> dict | None:
    for m in sandbox_messages(page):
        if title in json.dumps(m["blocks"]) and any(b["type"] == "actions" for b in m["blocks"]):
            return m
    return None


def click_approve(page: str, ts: str) -> None:
    click = {"channel": "C0DEPLOY", "message_ts": ts, "action_id": APPROVE, "user": "U0BOB"}
    r = http("POST", f"{page}/_sandbox/click", click)
    assert r.status == 200, r.body


def stop_within(child, seconds: float) -> float:
    """SIGTERM, as a runtime stops a container; returns how long the exit took (it must be 0)."""
    started = time.monotonic()
    child.popen.send_signal(signal.SIGTERM)
    code = child.popen.wait(timeout=seconds)
    took = time.monotonic() - started
    assert code == 0, f"{child.name} exited {code} on SIGTERM:\n{child.log()}"
    return took


def listening(pid: int) -> set[str]:
    """The TCP addresses listening in the network namespace of process `pid` ("0.0.0.0:8080")."""
    out = set()
    for line in Path(f"/proc/{pid}/net/tcp").read_text().splitlines()[1:]:
        local, state = line.split()[1], line.split()[3]
        if state == "0A":  # LISTEN
            address, port = local.split(":")
            out.add(".".join(str(b) for b in reversed(bytes.fromhex(address))) + f":{int(port, 16)}")
    return out


def test_inside_the_image_greenlight_listens_on_all_addresses_on_8080(request, rootfs):
    # The image's own environment, unchanged, in a network namespace of its own (so its ports
    # are free whatever runs on this machine): the API on 0.0.0.0:8080, the sandbox on 8090.
    rootfs.prepare()
    log = open(request.node.e2e_tmp / "dev-defaults.log", "wb")
    popen = subprocess.Popen(
        ["unshare", "--net", "chroot", "--userspec=65532:65532", str(rootfs.path), *rootfs.image.config["Entrypoint"]]
        + ["dev"],
        env={**rootfs.image.env, "GREENLIGHT_TOKEN": "gl_" + os.urandom(32).hex()},
        stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
    )
    log.close()
    child = Child("greenlight dev (image, its defaults)", popen, request.node.e2e_tmp / "dev-defaults.log")
    request.node.e2e_children.append(child)

    def on_all_addresses():
        child.assert_running()
        return {"0.0.0.0:8080", "0.0.0.0:8090"} <= listening(popen.pid)

    wait_for("dev to listen", on_all_addresses)
    stop_within(child, 15)


def readme_ask_arguments() -> list[str]:
    """The arguments of the README quick start's `cargo run ... -- ask ...` command."""
    text = (REPO / "README.md").read_text()
    section = text[text.index("\n## Quick start") :]
    section = section[: section.find("\n## ", 1)]
    line = next(line for line in section.splitlines() if " -- ask " in line)
    words = shlex.split(line)
    return words[words.index("--") + 1 :]


def test_the_quick_start_works_against_dev_from_the_image(request, rootfs):
    api, page = free_port(), free_port()
    key = "gl_" + os.urandom(32).hex()
    # Loopback and ports of the test's choosing instead of the image's 0.0.0.0:8080 and 8090;
    # the database is the image's default, /data/greenlight.db.
    env = {
        "GREENLIGHT_LISTEN": f"127.0.0.1:{api}",
        "GREENLIGHT_SANDBOX_LISTEN": f"127.0.0.1:{page}",
        "GREENLIGHT_TOKEN": key,
    }
    dev = rootfs.run(request, "greenlight dev (image)", ["dev"], env)

    def printed_export():
        dev.assert_running()
        return EXPORT.search(dev.log())

    url, printed_key = wait_for("dev to print the export line", printed_export, timeout=20).groups()
    assert (url, printed_key) == (f"http://127.0.0.1:{api}", key)
    wait_listening(dev, f"{url}/readyz")
    wait_listening(dev, f"http://127.0.0.1:{page}/_sandbox/state")

    # The README's `ask` (its arguments read from the Quick start), with the export dev printed,
    # from the image as well.
    env = {"GREENLIGHT_URL": url, "GREENLIGHT_TOKEN": printed_key}
    ask = rootfs.run(request, "greenlight ask (image)", readme_ask_arguments(), env, capture=True)

    def posted():
        ask.assert_running()
        return pending_message(f"http://127.0.0.1:{page}", "Deploy api v1.2")

    message = wait_for("the approval message in the sandbox", posted)
    click_approve(f"http://127.0.0.1:{page}", message["ts"])
    out, _ = ask.popen.communicate(timeout=30)
    lines = out.strip().splitlines()
    assert ask.popen.returncode == 0, (ask.popen.returncode, out, ask.log())
    assert re.fullmatch(r"req_[0-9A-Z]{26}", lines[0]), out
    assert lines[-1] == "approved by U0BOB", out

    stop_within(dev, 15)
    db = rootfs.path / "data" / "greenlight.db"
    assert db.is_file() and (db.stat().st_uid, db.stat().st_gid) == USER
    assert not (rootfs.path / "data" / "greenlight.db-wal").exists(), "SIGTERM left the write-ahead log behind"


def test_serve_from_the_image_reaches_postgresql_and_slack_by_name(request, rootfs, postgres_database):
    # The config file as Kubernetes mounts it: the ConfigMap's greenlight.toml in /etc/greenlight.
    configmap = yaml.safe_load((REPO / "deploy" / "kubernetes" / "configmap.yaml").read_text())
    (rootfs.path / "etc" / "greenlight").mkdir()
    (rootfs.path / "etc" / "greenlight" / "greenlight.toml").write_text(configmap["data"]["greenlight.toml"])

    api, slack = free_port(), free_port()
    secret = {"SLACK_BOT_TOKEN": "xoxb-image-" + os.urandom(8).hex(), "SLACK_SIGNING_SECRET": os.urandom(16).hex()}
    sandbox_env = {
        **secret,
        "GREENLIGHT_SANDBOX_LISTEN": f"127.0.0.1:{slack}",
        "GREENLIGHT_SANDBOX_INTERACTIVITY_URL": f"http://localhost:{api}/slack/interactions",
    }
    sandbox = rootfs.run(request, "greenlight sandbox (image)", ["sandbox"], sandbox_env)
    page = f"http://127.0.0.1:{slack}"
    wait_listening(sandbox, f"{page}/_sandbox/state")

    server_env = {
        **secret,
        "GREENLIGHT_CONFIG": "/etc/greenlight/greenlight.toml",
        "GREENLIGHT_DATABASE_URL": postgres_database,  # by address: 127.0.0.1
        "GREENLIGHT_LISTEN": f"127.0.0.1:{api}",
        "SLACK_API_URL": f"http://localhost:{slack}/api/",  # by name, through /etc/hosts
    }
    migrate = rootfs.run(request, "greenlight migrate (image)", ["migrate"], server_env)
    assert migrate.popen.wait(timeout=60) == 0, migrate.log()
    create_key = ["keys", "create", "--name", "image-test", "--scopes", "request,read"]
    keys = rootfs.run(request, "greenlight keys create (image)", create_key, server_env, capture=True)
    key = keys.popen.communicate(timeout=30)[0].strip()
    assert keys.popen.returncode == 0 and key.startswith("gl_"), keys.log()

    serve = rootfs.run(request, "greenlight serve (image)", ["serve"], server_env)
    wait_listening(serve, f"http://127.0.0.1:{api}/readyz")
    auth = {"Authorization": f"Bearer {key}"}
    body = {"workflow": "deploy", "title": "Deploy from the image"}
    r = http("POST", f"http://127.0.0.1:{api}/v1/requests", body, auth)
    assert r.status == 201, r.body
    request_id = r.json()["id"]
    message = wait_for("the message, posted to Slack by name", lambda: pending_message(page, "Deploy from the image"))
    click_approve(page, message["ts"])
    decided = http("GET", f"http://127.0.0.1:{api}/v1/requests/{request_id}?wait=20", headers=auth).json()
    assert decided["status"] == "approved" and decided["decided_by"] == "U0BOB", decided

    took = stop_within(serve, 15)
    assert took < 10, f"SIGTERM took {took:.1f} s, past the default shutdown_timeout"
