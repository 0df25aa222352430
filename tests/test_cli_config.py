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


@pytest.fixture
def secrets_set(monkeypatch: pytest.MonkeyPatch) -> None:
    """The example's placeholder secrets replaced, as an installation does it."""
    monkeypatch.setenv("CALLBACK_ARI_ARI_PASSWORD", "RealAriPw1")
    monkeypatch.setenv("CALLBACK_ARI_AMI_SECRET", "RealAmiPw2")


@pytest.mark.usefixtures("secrets_set")
def test_check_prints_the_effective_config_without_secrets(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["-c", str(EXAMPLE), "config", "check"]) == 0
    out, err = capsys.readouterr()
    assert err == ""
    assert "[queue:support]" in out
    assert "dial_template = PJSIP/{number}@trunk" in out
    assert "password = ***" in out and "secret = ***" in out
    assert "change-me" not in out and "RealAriPw1" not in out


@pytest.mark.usefixtures("secrets_set")
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


def test_missing_file_says_where_the_sample_comes_from(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "absent.conf"
    assert main(["-c", str(missing), "config", "check"]) == 2
    assert capsys.readouterr().err == (
        f"[file] {missing}: does not exist; start from the example: "
        f"callback-ari config sample > {missing}\n"
    )


def test_check_refuses_the_example_placeholder_secrets(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["-c", str(EXAMPLE), "config", "check"]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.splitlines() == [
        "[ami] secret: still the example's placeholder: set the real one (the secret of this "
        "user in manager.conf) here or in $CALLBACK_ARI_AMI_SECRET",
        "[ari] password: still the example's placeholder: set the real one (the password of "
        "this user in ari.conf) here or in $CALLBACK_ARI_ARI_PASSWORD",
    ]


def test_run_refuses_the_placeholders_before_connecting(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["-c", str(EXAMPLE), "run"]) == 2
    assert "[ari] password: still the example's placeholder" in capsys.readouterr().err


@pytest.mark.usefixtures("secrets_set")
def test_config_path_after_the_subcommand(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["config", "check", "-c", str(EXAMPLE)]) == 0
    assert f"effective configuration from {EXAMPLE}" in capsys.readouterr().out
    # after the subcommand it wins over the one before it
    missing = tmp_path / "absent.conf"
    assert main(["-c", str(missing), "config", "check", "--config", str(EXAMPLE)]) == 0
    assert main(["config", "check", "-c", str(missing)]) == 2
    assert str(missing) in capsys.readouterr().err


@pytest.mark.usefixtures("secrets_set")
def test_quiet_check_prints_nothing_when_good_and_every_problem_when_bad(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["config", "check", "--quiet", "-c", str(EXAMPLE)]) == 0
    assert capsys.readouterr() == ("", "")
    path = tmp_path / "callback_ari.conf"
    path.write_text(FIVE_MISTAKES)
    assert main(["config", "check", "-q", "-c", str(path)]) == 2
    out, err = capsys.readouterr()
    assert out == "" and len(err.splitlines()) == 5


def test_config_sample_prints_the_example(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["config", "sample"]) == 0
    assert capsys.readouterr().out == EXAMPLE.read_text()


def test_kit_writes_the_dialplan_files_and_keeps_edited_ones(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    kit = sorted(p.name for p in EXAMPLE.parent.iterdir() if p.suffix in (".conf", ".service"))
    assert "extensions_callback.conf" in kit and "callback-ari.service" in kit
    dest = tmp_path / "kit"
    assert main(["kit", str(dest)]) == 0
    assert sorted(p.name for p in dest.iterdir()) == kit
    for name in kit:
        assert (dest / name).read_bytes() == (EXAMPLE.parent / name).read_bytes()
    capsys.readouterr()

    edited = dest / "ari.conf"
    edited.write_text("[callback-ari]\npassword = mine\n")
    assert main(["kit", str(dest)]) == 0
    assert edited.read_text() == "[callback-ari]\npassword = mine\n"
    assert (dest / "ari.conf.dist").read_bytes() == (EXAMPLE.parent / "ari.conf").read_bytes()
    assert "kept your" in capsys.readouterr().out
    assert main(["kit", "--force", str(dest)]) == 0
    assert edited.read_bytes() == (EXAMPLE.parent / "ari.conf").read_bytes()


def test_usage(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    assert "config" in capsys.readouterr().err
    assert main(["config"]) == 2
    assert "check" in capsys.readouterr().err
    assert main(["config", "frobnicate"]) == 2
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.startswith("callback-ari ")
