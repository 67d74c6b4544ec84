"""Fixtures for the tests of what greenlight ships: the container image (built by scripts/image
with buildah, its root filesystem run in a chroot as a container runtime would), the Kubernetes
manifests and the systemd unit. The helpers of tests/e2e (free ports, HTTP, child processes whose
output is attached to a failure) are shared, not copied."""

from __future__ import annotations

import importlib.util
import json
import os
import secrets
import shutil
import stat
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

_spec = importlib.util.spec_from_file_location("e2e_conftest", REPO / "tests" / "e2e" / "conftest.py")
e2e = importlib.util.module_from_spec(_spec)
sys.modules["e2e_conftest"] = e2e
_spec.loader.exec_module(e2e)

Child, free_port, http, wait_for, wait_listening = e2e.Child, e2e.free_port, e2e.http, e2e.wait_for, e2e.wait_listening
# Attaches the output of a test's child processes to its failure report.
pytest_runtest_makereport = e2e.pytest_runtest_makereport


def workspace_version() -> str:
    return tomllib.loads((REPO / "Cargo.toml").read_text())["workspace"]["package"]["version"]


def default_shutdown_timeout_seconds() -> float:
    """The built-in `shutdown_timeout`, read from the constant the config loader uses."""
    source = (REPO / "crates" / "greenlight" / "src" / "config" / "schema.rs").read_text()
    value = source.split('pub const DEFAULT_SHUTDOWN_TIMEOUT: &str = "', 1)[1].split('"', 1)[0]
    return duration_seconds(value)


def duration_seconds(text: str) -> float:
    """"10s", "500ms", "2m"; a bare number is seconds (as systemd reads it)."""
    if text.isdigit():
        return int(text)
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}
    for unit in ("ms", "s", "m", "h"):
        if text.endswith(unit) and text[: -len(unit)].isdigit():
            return int(text[: -len(unit)]) * units[unit]
    raise ValueError(f"not a duration: {text!r}")


def buildah(*args: str, timeout: float = 120) -> str:
    done = subprocess.run(["buildah", *args], capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"buildah {' '.join(args)} exited {done.returncode}:\n{done.stderr}"
    return done.stdout


# --- the image ---------------------------------------------------------------------------------


@dataclass
class Image:
    tag: str
    config: dict  # the OCI image config (User, Entrypoint, Cmd, Env, ...), as `buildah inspect` reads it

    @property
    def env(self) -> dict:
        return dict(item.split("=", 1) for item in self.config.get("Env", []))


@pytest.fixture(scope="session")
def image() -> Image:
    """The image scripts/test built (GREENLIGHT_IMAGE), or one built now with scripts/image."""
    tag = os.environ.get("GREENLIGHT_IMAGE")
    if not tag:
        if os.geteuid() != 0:
            pytest.fail("the image tests need root (buildah mount, chroot)", pytrace=False)
        tag = f"greenlight:{workspace_version()}"
        subprocess.run(["buildah", "rmi", tag], capture_output=True)
        built = subprocess.run(
            [str(REPO / "scripts" / "image"), "--builder", "buildah"], stdout=subprocess.PIPE, text=True, timeout=3600
        )
        assert built.returncode == 0, "scripts/image failed (its output is above)"
        tag = built.stdout.strip().splitlines()[-1]
    inspected = json.loads(buildah("inspect", "--type", "image", tag))
    return Image(tag=tag, config=inspected["OCIv1"]["config"])


@dataclass
class RootFs:
    """A working container of the image, its root filesystem mounted at `path`."""

    image: Image
    path: Path
    prepared: bool = False

    def prepare(self) -> None:
        """What every container runtime adds to an image's files before it starts it: the basic
        devices and /etc/hosts. greenlight needs /dev/random and /dev/urandom: the getrandom crate
        (0.3, under rand) looks glibc's getrandom() up with dlsym, which finds nothing in a static
        binary, so it reads the files instead. /proc, which runtimes mount too, is left out: greenlight
        does without it."""
        if self.prepared:
            return
        dev = self.path / "dev"
        dev.mkdir(mode=0o755)
        devices = {"null": (1, 3), "zero": (1, 5), "full": (1, 7), "random": (1, 8), "urandom": (1, 9), "tty": (5, 0)}
        for name, (major, minor) in devices.items():
            os.mknod(dev / name, 0o666 | stat.S_IFCHR, os.makedev(major, minor))
            os.chmod(dev / name, 0o666)
        (self.path / "etc" / "hosts").write_text("127.0.0.1 localhost\n::1 localhost ip6-localhost\n")
        self.prepared = True

    def run(self, request, name: str, args: list[str], env: dict, capture: bool = False) -> Child:
        """Starts the image's entrypoint with `args` as a container runtime would with the image's
        config: chroot into the root filesystem, chdir to WorkingDir, drop to User (no
        supplementary groups), the image's Env plus `env` and nothing from this process. Its
        output goes to a log attached to a failure report (stdout to a pipe with `capture`)."""
        self.prepare()
        uid, gid = (int(x) for x in self.image.config["User"].split(":"))
        root, workdir = str(self.path), self.image.config.get("WorkingDir") or "/"

        def enter():
            os.chroot(root)
            os.chdir(workdir)
            os.setgroups([])
            os.setgid(gid)
            os.setuid(uid)

        log_path = Path(request.node.e2e_tmp) / f"{name}.log"
        with open(log_path, "wb") as log:
            popen = subprocess.Popen(
                [*self.image.config["Entrypoint"], *args],
                env={**self.image.env, **env},
                preexec_fn=enter,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE if capture else log,
                stderr=log,
                text=capture,
            )
        child = Child(name, popen, log_path)
        request.node.e2e_children.append(child)
        return child


@pytest.fixture
def rootfs(request, image, tmp_path):
    """A fresh working container of the image (`buildah from`), mounted (`buildah mount`); its
    children are stopped and the container removed at teardown."""
    request.node.e2e_children = []
    request.node.e2e_tmp = tmp_path
    name = "greenlight-test-" + secrets.token_hex(4)
    buildah("from", "--pull-never", "--name", name, image.tag)
    try:
        path = Path(buildah("mount", name).strip())
        yield RootFs(image=image, path=path)
    finally:
        for child in request.node.e2e_children:
            child.stop()
        subprocess.run(["buildah", "umount", name], capture_output=True)
        subprocess.run(["buildah", "rm", name], capture_output=True)


# --- PostgreSQL --------------------------------------------------------------------------------


@pytest.fixture
def postgres_database():
    """A database of its own on the test PostgreSQL (GREENLIGHT_TEST_POSTGRES_URL's server),
    dropped afterwards; yields its URL."""
    base = os.environ.get("GREENLIGHT_TEST_POSTGRES_URL", "postgres://postgres@127.0.0.1:5432/postgres")
    for tool in ("createdb", "dropdb"):
        if not shutil.which(tool):
            pytest.fail(f"{tool} not found (apt-get install postgresql-client)", pytrace=False)
    name = "greenlight_image_" + secrets.token_hex(4)
    subprocess.run(["createdb", "--maintenance-db", base, name], check=True, capture_output=True, timeout=30)
    try:
        yield base.rsplit("/", 1)[0] + "/" + name
    finally:
        subprocess.run(["dropdb", "--force", "--maintenance-db", base, name], capture_output=True, timeout=30)
