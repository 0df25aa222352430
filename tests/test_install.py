"""The system install (dialplan/install.sh) on a clean Debian 12, checked the way systemd would.

A minbase bookworm chroot (dialplan/sandbox/installbox) stands in for the PBX host. systemd is
not PID 1 there, so the installed unit is checked with ``systemd-analyze verify`` and its
ExecStartPre/ExecStart/ExecReload lines are run by hand, as the unit's user, with the unit's
EnvironmentFile; ExecStart must bring the service up against the real sandbox PBX.
"""

from __future__ import annotations

import hashlib
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest

from callback_ari.sim.sandbox import Sandbox
from callback_ari.sim.simpbx.redis_process import RedisProcess

REPO = Path(__file__).resolve().parent.parent
INSTALLBOX = REPO / "dialplan" / "sandbox" / "installbox"
KIT = REPO / "dialplan"
CONF = "/etc/asterisk/callback_ari.conf"
UNIT = "/etc/systemd/system/callback-ari.service"
ENV_FILE = "/etc/asterisk/callback_ari.env"

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


@dataclass(frozen=True, slots=True)
class Box:
    """One clean chroot instance with callback-ari installed into it."""

    name: str
    root: Path

    def _env(self) -> dict[str, str]:
        return {**os.environ, "CBINST_NAME": self.name}

    def box(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            ["bash", str(INSTALLBOX), *args], env=self._env(), capture_output=True, text=True,
            timeout=600, check=False,
        )  # fmt: skip
        if check and proc.returncode != 0:
            pytest.fail(f"installbox {' '.join(args[:3])}: exit {proc.returncode}\n"
                        f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")  # fmt: skip
        return proc

    def run(self, *cmd: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run ``cmd`` as root inside the chroot."""
        return self.box("run", *cmd, check=check)

    def install(self) -> str:
        proc = self.run("bash", "/src/dialplan/install.sh")
        return proc.stdout + proc.stderr

    def path(self, inside: str) -> Path:
        return self.root / inside.lstrip("/")

    def ids(self, user: str) -> tuple[int, int]:
        entry = self.run("getent", "passwd", user).stdout.split(":")
        return int(entry[2]), int(entry[3])

    def as_user(self, user: str, argv: list[str], env: Mapping[str, str]) -> list[str]:
        """A host command running ``argv`` in the chroot as ``user``, environment exactly
        ``env``; chroot execs it, so the process's pid is the command's ($MAINPID)."""
        uid, gid = self.ids(user)
        return [
            "chroot", f"--userspec={uid}:{gid}", f"--groups={gid}", str(self.root),
            "/usr/bin/env", "-i", *(f"{k}={v}" for k, v in env.items()), *argv,
        ]  # fmt: skip


def _unavailable() -> str | None:
    if os.geteuid() != 0:
        return "the install test needs root (chroot, mounts)"
    if shutil.which("debootstrap") is None:
        return "debootstrap is not installed"
    if not (REPO / ".ci" / "requirements.lock").is_file():
        return "no .ci/requirements.lock"
    return None


@pytest.fixture(scope="module")
def installed() -> Iterator[Box]:
    """A fresh chroot (cached base, new overlay) after one run of the install command."""
    reason = _unavailable()
    if reason is not None:
        if os.environ.get("CI"):
            pytest.fail(f"the install test cannot run in CI: {reason}")
        pytest.skip(reason)
    name = os.environ.get("CBINST_NAME", "inst1")
    env = {**os.environ, "CBINST_NAME": name}
    facts = subprocess.run(["bash", str(INSTALLBOX), "env"], env=env, capture_output=True,
                           text=True, check=True).stdout  # fmt: skip
    root = Path(dict(line.split("=", 1) for line in facts.splitlines())["CBINST_ROOT"])
    box = Box(name, root)
    box.box("build")
    box.box("fresh")
    try:
        output = box.install()
        assert "install: installed /etc/asterisk/callback_ari.conf" in output
        yield box
    finally:
        box.box("teardown", check=False)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def unit_settings(text: str) -> dict[str, list[str]]:
    """``{key: [values in order]}`` of a unit file's [Service] section."""
    settings: dict[str, list[str]] = {}
    section = ""
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line
            continue
        if section == "[Service]":
            key, _, value = line.partition("=")
            settings.setdefault(key, []).append(value)
    return settings


# --- what the install lays out ---------------------------------------------------------------


def test_install_lays_out_user_venv_config_unit_and_kit(installed: Box) -> None:
    box = installed
    user = box.run("getent", "passwd", "callback-ari").stdout.strip().split(":")
    assert int(user[2]) < 1000 and user[6] == "/usr/sbin/nologin"  # a system user
    gid = int(user[3])
    assert box.run("getent", "group", "callback-ari").stdout.split(":")[2] == str(gid)

    conf = box.path(CONF).stat()
    assert (oct(conf.st_mode & 0o7777), conf.st_uid, conf.st_gid) == ("0o640", 0, gid)
    assert box.path(CONF).read_bytes() == (KIT / "callback_ari.conf").read_bytes()
    unit = box.path(UNIT).stat()
    assert (oct(unit.st_mode & 0o7777), unit.st_uid) == ("0o644", 0)
    assert box.path(UNIT).read_bytes() == (KIT / "callback-ari.service").read_bytes()
    wants = box.path("/etc/systemd/system/multi-user.target.wants/callback-ari.service")
    assert os.readlink(wants) == UNIT  # enabled

    # The kit comes out of the installed wheel and equals dialplan/, file for file.
    share = box.path("/usr/share/callback-ari")
    kit = sorted(p.name for p in KIT.iterdir() if p.suffix in (".conf", ".service"))
    assert sorted(p.name for p in share.iterdir()) == kit
    for name in kit:
        assert (share / name).read_bytes() == (KIT / name).read_bytes(), name
    assert (
        os.readlink(box.path("/usr/local/bin/callback-ari")) == "/opt/callback-ari/bin/callback-ari"
    )


def test_the_venv_holds_exactly_the_locked_versions(installed: Box) -> None:
    # A universal lock may pin one package at several versions, each for other Pythons.
    locked: dict[str, set[str]] = {}
    lock_text = (REPO / ".ci/requirements.lock").read_text()
    for name, version in re.findall(r"^([a-z0-9][a-z0-9._-]*)==([^ ;\\\n]+)", lock_text, re.M):
        locked.setdefault(name, set()).add(version)
    frozen = installed.run("/opt/callback-ari/bin/python", "-m", "pip", "list", "--format=freeze",
                           "--exclude", "pip", "--exclude", "callback-ari").stdout  # fmt: skip
    installed_versions = dict(line.split("==") for line in frozen.split())
    normal = {re.sub(r"[-_.]+", "-", k.lower()): v for k, v in installed_versions.items()}
    assert normal, "nothing installed"
    for name, version in normal.items():
        assert version in locked.get(name, set()), f"{name} {version} is not a locked version"
    assert {"aiohttp", "redis", "structlog", "phonenumbers"} <= normal.keys()


def test_the_installed_unit_verifies_and_a_broken_one_does_not(installed: Box) -> None:
    good = installed.run("systemd-analyze", "verify", UNIT, check=False)
    assert good.returncode == 0, good.stderr
    assert "callback-ari.service" not in good.stderr
    # The check is real: the same unit pointing at a missing program fails it.
    broken = installed.path("/tmp/broken/callback-ari.service")
    broken.parent.mkdir(exist_ok=True)
    broken.write_text(
        installed.path(UNIT).read_text().replace("bin/callback-ari -c", "bin/nope -c")
    )
    bad = installed.run(
        "systemd-analyze", "verify", "/tmp/broken/callback-ari.service", check=False
    )
    assert bad.returncode != 0 and "/opt/callback-ari/bin/nope" in bad.stderr


# --- the unit's commands, run as systemd would run them ----------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def get(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return 0


@pytest.mark.asterisk
def test_every_exec_line_runs_as_the_unit_user(
    installed: Box, sandbox: Sandbox, redis_process: RedisProcess, tmp_path: Path
) -> None:
    box = installed
    sandbox.start()
    settings = unit_settings(box.path(UNIT).read_text())
    [user] = settings["User"]
    [env_file] = settings["EnvironmentFile"]
    assert env_file.lstrip("-") == ENV_FILE
    http_port = free_port()
    # The example config as installed; secrets and this machine's addresses from the unit's
    # EnvironmentFile, the way an administrator keeps secrets out of the file.
    secrets = {
        "CALLBACK_ARI_ARI_PASSWORD": sandbox.ari_password,
        "CALLBACK_ARI_AMI_SECRET": sandbox.ami_secret,
        "CALLBACK_ARI_ARI_URL": sandbox.ari_url,
        "CALLBACK_ARI_AMI_PORT": str(sandbox.ami_port),
        "CALLBACK_ARI_REDIS_URL": redis_process.url,
        "CALLBACK_ARI_HTTP_PORT": str(http_port),
    }
    box.path(ENV_FILE).write_text("".join(f"{k}={v}\n" for k, v in secrets.items()))
    box.path(ENV_FILE).chmod(0o600)
    uid, _gid = box.ids(user)
    env = {
        "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin",
        "HOME": "/nonexistent", "USER": user, "LOGNAME": user, "LANG": "C.UTF-8",
        **secrets,
    }  # fmt: skip

    for line in settings["ExecStartPre"]:
        pre = subprocess.run(box.as_user(user, shlex.split(line), env), capture_output=True,
                             text=True, timeout=60, check=False)  # fmt: skip
        assert pre.returncode == 0, f"{line}: {pre.stderr}"

    [start] = settings["ExecStart"]
    log = tmp_path / "service.log"
    with log.open("w") as out:
        service = subprocess.Popen(box.as_user(user, shlex.split(start), env), stdout=out,
                                   stderr=subprocess.STDOUT)  # fmt: skip
    try:
        readyz = f"http://127.0.0.1:{http_port}/readyz"
        deadline = time.monotonic() + 30
        while get(readyz) != 200:
            assert service.poll() is None, (
                f"ExecStart exited {service.returncode}: {log.read_text()}"
            )
            assert time.monotonic() < deadline, f"/readyz never answered 200: {log.read_text()}"
            time.sleep(0.2)
        with open(f"/proc/{service.pid}/status") as status:
            assert f"Uid:\t{uid}\t" in status.read()  # really the unit's user

        # The admin changes a queue setting, then: systemctl reload callback-ari.
        conf = box.path(CONF)
        conf.write_text(conf.read_text().replace("offer_threshold = 120", "offer_threshold = 90"))
        for line in settings["ExecReload"]:
            argv = [arg.replace("$MAINPID", str(service.pid)) for arg in shlex.split(line)]
            reload = subprocess.run(box.as_user(user, argv, env), capture_output=True, text=True,
                                    timeout=60, check=False)  # fmt: skip
            assert reload.returncode == 0, f"{line}: {reload.stderr}"
        deadline = time.monotonic() + 10
        while '"config.reloaded"' not in log.read_text():
            assert time.monotonic() < deadline, f"no reload logged: {log.read_text()}"
            time.sleep(0.1)
        assert '"applied": ["[queue:support] offer_threshold"]' in log.read_text()
        assert service.poll() is None and get(readyz) == 200  # nothing restarted
    finally:
        service.send_signal(signal.SIGTERM)  # KillSignal=SIGTERM
        try:
            status = service.wait(timeout=20)  # TimeoutStopSec=20s
        except subprocess.TimeoutExpired:
            service.kill()
            raise
    text = log.read_text()
    assert status == 0, text
    assert '"service.stopped"' in text
    for secret in (sandbox.ari_password, sandbox.ami_secret):
        assert secret not in text


# --- running the install again ----------------------------------------------------------------


def snapshot(box: Box, paths: list[str]) -> dict[str, tuple[str, int, int, int]]:
    out = {}
    for p in paths:
        st = box.path(p).stat()
        out[p] = (sha256(box.path(p)), st.st_mode, st.st_uid, st.st_gid)
    return out


def test_running_the_install_again_changes_nothing_the_admin_edited(installed: Box) -> None:
    box = installed
    conf, unit = box.path(CONF), box.path(UNIT)
    conf.write_text(conf.read_text() + "\n; edited by the admin\n")
    unit.write_text(unit.read_text().replace("RestartSec=2s", "RestartSec=7s"))
    before = snapshot(box, [CONF, UNIT])

    output = box.install()
    assert snapshot(box, [CONF, UNIT]) == before
    assert not box.path(CONF + ".dist").exists() and not box.path(UNIT + ".dist").exists()
    assert "installed /etc" not in output and "kept your" not in output

    # A newer version ships another example config: the admin's file stays, the new one is
    # written beside it, with the same mode and owner.
    record = box.path("/var/lib/callback-ari/conffiles")
    lines = record.read_text().splitlines()
    record.write_text("".join(
        ("0" * 64 + f" {CONF}" if line.endswith(f" {CONF}") else line) + "\n" for line in lines
    ))  # fmt: skip
    output = box.install()
    assert f"kept your {CONF}; the new version is {CONF}.dist" in output
    assert snapshot(box, [CONF, UNIT]) == before
    dist = box.path(CONF + ".dist")
    assert dist.read_bytes() == (KIT / "callback_ari.conf").read_bytes()
    assert (dist.stat().st_mode & 0o7777, dist.stat().st_gid) == (0o640, before[CONF][3])


def test_an_unedited_file_follows_the_new_version(installed: Box) -> None:
    box = installed
    unit = box.path(UNIT)
    # As if an older release had installed this unit and the admin never touched it.
    old = "[Unit]\nDescription=an older callback-ari\n"
    unit.write_text(old)
    record = box.path("/var/lib/callback-ari/conffiles")
    kept = [line for line in record.read_text().splitlines() if not line.endswith(f" {UNIT}")]
    digest = hashlib.sha256(old.encode()).hexdigest()
    record.write_text("".join(line + "\n" for line in [*kept, f"{digest} {UNIT}"]))
    box.path(UNIT + ".dist").unlink(missing_ok=True)

    output = box.install()
    assert f"installed {UNIT}" in output
    assert unit.read_bytes() == (KIT / "callback-ari.service").read_bytes()
    assert not box.path(UNIT + ".dist").exists()


def test_with_systemd_running_it_starts_the_service_once_the_config_passes(
    installed: Box,
) -> None:
    """systemd cannot run here: a stand-in systemctl records what the install asks of it."""
    box = installed
    stub, log = box.path("/usr/local/sbin/systemctl"), box.path("/tmp/systemctl.log")
    stub.write_text('#!/bin/sh\necho "$*" >>/tmp/systemctl.log\n[ "$1" != is-active ]\n')
    stub.chmod(0o755)
    box.path("/run/systemd/system").mkdir(parents=True)
    env_file = box.path(ENV_FILE)
    try:
        env_file.unlink(missing_ok=True)  # the example's placeholder secrets: not started
        output = box.install()
        calls = log.read_text().splitlines()
        assert calls[:2] == ["daemon-reload", "enable --quiet callback-ari.service"]
        assert not any(c.startswith(("start", "restart")) for c in calls)
        assert "[ari] password: still the example's placeholder" in output
        assert "enabled, not started" in output

        log.unlink()
        env_file.write_text("CALLBACK_ARI_ARI_PASSWORD=a-real-one\nCALLBACK_ARI_AMI_SECRET=b\n")
        env_file.chmod(0o600)
        output = box.install()
        calls = log.read_text().splitlines()
        assert "start callback-ari.service" in calls and "started callback-ari" in output
    finally:
        stub.unlink()
        log.unlink(missing_ok=True)
        box.path("/run/systemd/system").rmdir()
