"""`callback-ari config check`: prints the effective config or every problem, exit 0 / 2."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from callback_ari.cli.app import main
from callback_ari.logs import reset_logging

EXAMPLE = Path(__file__).resolve().parent.parent / "dialplan" / "callback_ari.conf"

FIVE_MISTAKES = """
[general]
log_level = chatty                   ; 1 not a level
[ari]
password = Sup3rSecretAriPw
url = http://127.0.0.1:8088/ari      ; 2 must not end in /ari
[ami]
secret = Sup3rSecretAmiPw
[redis]
url = redis://:RedisPw99@127.0.0.1:6379/0
audit_maxlen = lots                  ; 3 not a number
[queue:support]
max_attempts = 0                     ; 4 out of range
hours = mon-fri 08:00-18:00
timezone = Europe/Atlantis           ; 5 unknown zone
"""


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name in list(os.environ):
        if name.startswith("CALLBACK_ARI_"):
            monkeypatch.delenv(name)
    yield
    reset_logging()


def test_check_prints_the_effective_config_without_secrets(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["-c", str(EXAMPLE), "config", "check"]) == 0
    out, err = capsys.readouterr()
    assert err == ""
    assert "[queue:support]" in out
    assert "dial_template = PJSIP/{number}@trunk" in out
    assert "password = ***" in out and "secret = ***" in out
    assert "change-me" not in out


def test_check_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--config", str(EXAMPLE), "config", "check", "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["ari"]["password"] == "***"
    assert shown["queue:support"]["max_attempts"] == 3


def test_check_reports_all_five_mistakes_without_secrets(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "callback_ari.conf"
    path.write_text(FIVE_MISTAKES)
    assert main(["-c", str(path), "config", "check"]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.splitlines() == [
        "[general] log_level: must be one of debug, info, warning, error, critical, got 'chatty'",
        "[ari] url: must be the HTTP base without /ari (the client adds /ari), "
        "got 'http://127.0.0.1:8088/ari'",
        "[redis] audit_maxlen: must be a whole number, got 'lots'",
        "[queue:support] max_attempts: must be >= 1, got '0'",
        "[queue:support] timezone: unknown time zone 'Europe/Atlantis', got 'Europe/Atlantis'",
    ]
    for secret in ("Sup3rSecretAriPw", "Sup3rSecretAmiPw", "RedisPw99"):
        assert secret not in err


def test_env_overrides_apply_to_the_check(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "callback_ari.conf"
    path.write_text("[ami]\nsecret = s\n[queue:help-desk]\n")
    monkeypatch.setenv("CALLBACK_ARI_ARI_PASSWORD", "EnvPassword1")
    monkeypatch.setenv("CALLBACK_ARI_QUEUE_HELP_DESK_MAX_ATTEMPTS", "9")
    assert main(["-c", str(path), "config", "check"]) == 0
    out = capsys.readouterr().out
    assert "max_attempts = 9" in out and "EnvPassword1" not in out

    monkeypatch.setenv("CALLBACK_ARI_QUEUE_HELP_DESK_MAX_ATTEMPTS", "-1")
    assert main(["-c", str(path), "config", "check"]) == 2
    assert capsys.readouterr().err == (
        "[queue:help-desk] max_attempts: must be >= 1 "
        "($CALLBACK_ARI_QUEUE_HELP_DESK_MAX_ATTEMPTS), got '-1'\n"
    )


def test_missing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "absent.conf"
    assert main(["-c", str(missing), "config", "check"]) == 2
    assert capsys.readouterr().err == (
        f"[file] {missing}: cannot read: No such file or directory\n"
    )


def test_usage(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    assert "config" in capsys.readouterr().err
    assert main(["config"]) == 2
    assert "check" in capsys.readouterr().err
    assert main(["config", "frobnicate"]) == 2
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.startswith("callback-ari ")
