"""What administrators install: the compose stack, the example config, the dialplan kit."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

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
