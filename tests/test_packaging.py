"""What administrators install: locked dependencies, the compose stack, the config, the kit."""

from __future__ import annotations

import importlib.metadata
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from callback_ari.config.loader import load_config

REPO = Path(__file__).resolve().parent.parent


def compose_command() -> list[str]:
    """``docker compose`` (v2 plugin) or ``docker-compose`` (v1); skip only without docker."""
    if shutil.which("docker") is None and shutil.which("docker-compose") is None:
        pytest.skip("no docker CLI on this machine")
    if shutil.which("docker") is not None:
        probe = subprocess.run(
            ["docker", "compose", "version"], capture_output=True, text=True, check=False
        )
        if probe.returncode == 0:
            return ["docker", "compose"]
    if shutil.which("docker-compose") is not None:
        return ["docker-compose"]
    pytest.fail("docker is installed but neither 'docker compose' nor 'docker-compose' works")


@pytest.mark.slow  # docker-compose in a subprocess
def test_docker_compose_file_is_valid() -> None:
    result = subprocess.run(
        [*compose_command(), "-f", str(REPO / "docker-compose.yml"), "config"],
        capture_output=True,
        text=True,
        check=False,
        cwd=REPO,
    )
    assert result.returncode == 0, result.stderr
    rendered = result.stdout
    for service in ("redis", "asterisk", "callback-ari"):
        assert f"{service}:" in rendered
    assert "appendonly" in rendered  # Redis persistence on
    assert "service:asterisk" in rendered  # ARI/AMI stay on Asterisk's loopback


def test_shipped_example_config_loads_and_matches_the_dialplan_kit() -> None:
    config = load_config(REPO / "dialplan" / "callback_ari.conf", env={})
    kit = (REPO / "dialplan" / "extensions_callback.conf").read_text()
    for q in config.queues.values():
        assert f"[{q.connect_context}]" in kit
        assert f"[{q.return_context}]" in kit
        assert f"exten => {q.name}," in kit
    assert f"Stasis({config.general.app}," in kit


def test_dockerfile_runs_as_non_root_with_a_health_check() -> None:
    dockerfile = (REPO / "Dockerfile").read_text()
    assert "\nUSER " in dockerfile and "USER root" not in dockerfile
    assert "HEALTHCHECK" in dockerfile and "/healthz" in dockerfile


def locked_pins(lock: Path) -> dict[str, str]:
    """Name -> version of every pin in a uv/pip-compile lock that applies to this Python."""
    pins: dict[str, str] = {}
    for line in lock.read_text().splitlines():
        if not line or line[0] in " #-":
            continue  # hash continuation lines, comments, options
        req = Requirement(line.rstrip(" \\"))
        if req.marker is None or req.marker.evaluate():
            (spec,) = req.specifier
            assert spec.operator == "==", line
            pins[canonicalize_name(req.name)] = spec.version
    return pins


def test_installed_versions_are_the_locked_ones() -> None:
    """`bash .ci/install --test` installed exactly .ci/requirements-test.lock."""
    pins = locked_pins(REPO / ".ci" / "requirements-test.lock")
    assert {"redis", "mypy", "ruff", "pytest", "setuptools"} <= pins.keys()
    installed = {
        canonicalize_name(dist.metadata["Name"]): dist.version
        for dist in importlib.metadata.distributions()
    }
    wrong = {
        name: (version, installed.get(name, "missing"))
        for name, version in pins.items()
        if installed.get(name) != version
    }
    assert not wrong, f"(locked, installed) differ; run bash .ci/install --test: {wrong}"


def test_the_runtime_lock_pins_the_same_versions_as_the_test_lock() -> None:
    runtime = locked_pins(REPO / ".ci" / "requirements.lock")
    test = locked_pins(REPO / ".ci" / "requirements-test.lock")
    assert {name: test.get(name) for name in runtime} == runtime


def test_install_refuses_an_old_python_before_installing_anything(tmp_path: Path) -> None:
    (tmp_path / ".ci").mkdir()
    shutil.copy(REPO / ".ci" / "install", tmp_path / ".ci" / "install")
    shutil.copy(REPO / "pyproject.toml", tmp_path / "pyproject.toml")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    # A python3 that reports 3.10.13 to every -c snippet; apt-get and sudo that would tell.
    fake = bin_dir / "python3"
    fake.write_text(
        "#!/bin/sh\n"
        'if [ "$1" = -c ]; then\n'
        f'  exec {sys.executable} -c "import sys; sys.version_info = (3, 10, 13)\n$2"\n'
        "fi\n"
        f'exec {sys.executable} "$@"\n'
    )
    for name in ("apt-get", "sudo"):
        (bin_dir / name).write_text('#!/bin/sh\necho "$0 was called" >&2; exit 99\n')
    for script in bin_dir.iterdir():
        script.chmod(0o755)
    # Only these on PATH, so redis-server and chromium look missing and apt would be next.
    for tool in ("dirname", "sed", "id", "env"):
        found = shutil.which(tool)
        assert found is not None, tool
        (bin_dir / tool).symlink_to(found)
    result = subprocess.run(
        [shutil.which("bash") or "/bin/bash", str(tmp_path / ".ci" / "install"), "--test"],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
        env={**os.environ, "PATH": str(bin_dir)},
    )
    assert result.returncode != 0
    assert "needs Python >= 3.11, but python3 is Python 3.10.13" in result.stderr
    assert "was called" not in result.stderr
    assert not (tmp_path / ".venv").exists()


def test_the_wheel_carries_the_dialplan_kit_file_for_file(tmp_path: Path) -> None:
    """`callback-ari kit` and `config sample` read package data: it must be dialplan/ itself."""
    src = tmp_path / "src"
    shutil.copytree(
        REPO, src, symlinks=True,
        ignore=shutil.ignore_patterns(".git", ".venv", "build", "*.egg-info", "__pycache__"),
    )  # fmt: skip
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
         "-w", str(tmp_path / "dist"), str(src)],
        capture_output=True, text=True, check=False, timeout=120,
    )  # fmt: skip
    assert built.returncode == 0, built.stderr
    [wheel] = (tmp_path / "dist").glob("callback_ari-*.whl")
    kit = {p.name for p in (REPO / "dialplan").iterdir() if p.suffix in (".conf", ".service")}
    with zipfile.ZipFile(wheel) as archive:
        packaged = {
            n.removeprefix("callback_ari/dialplan/"): archive.read(n)
            for n in archive.namelist()
            if n.startswith("callback_ari/dialplan/")
        }
    assert set(packaged) == kit
    for name in kit:
        assert packaged[name] == (REPO / "dialplan" / name).read_bytes(), name
