"""`callback-ari demo --asterisk`: the same story with real channels on the sandbox Asterisk."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from callback_ari.cli import app as cli
from callback_ari.logs import reset_logging
from callback_ari.masking import mask
from callback_ari.sim.demo import run_demo
from callback_ari.sim.demo_script import make_cast
from callback_ari.sim.sandbox import Sandbox
from tests.test_demo import summary_row


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    yield
    reset_logging()  # the CLI configures structlog globally


@pytest.mark.asterisk
@pytest.mark.timeout(180)  # about a minute: the real PBX plays its prompts in real time
def test_demo_on_the_real_pbx_connects_every_callback(
    sandbox: Sandbox, capsys: pytest.CaptureFixture[str]
) -> None:
    status = cli.main(["demo", "--asterisk"])
    out = capsys.readouterr().out
    assert status == 0, out[-4000:]
    assert "demo: OK: 3 of 3 callbacks connected" in out
    assert f"demo: real Asterisk 22 (sandbox {sandbox.name}, Asterisk 22." in out
    alice = summary_row(out, "Alice Johnson", "callbacks")
    assert re.search(r"caller ID\s+1\s+connected\s+connected$", alice)
    bob = summary_row(out, "Bob Martinez", "callbacks")
    assert re.search(r"caller ID\s+2\s+busy, connected\s+connected$", bob)
    carol = summary_row(out, "Carol Nguyen", "callbacks")
    assert re.search(r"keyed number\s+1\s+connected\s+connected$", carol)
    keyed = next(c.keyed for c in make_cast(7) if c.name == "Carol Nguyen")
    assert mask(keyed) in carol and keyed not in out
    # the real app_queue names its members as queues.conf does ("Agent One")
    dave = summary_row(out, "Dave Patel", "callers")
    assert re.search(r"declined\s+kept holding; answered by Agent \w+ after \d+:\d\d", dave)
    for name in ("Alice Johnson", "Bob Martinez", "Carol Nguyen"):
        assert "talked to Agent " in summary_row(out, name, "callers")
    assert "busy on attempt 1" in summary_row(out, "Bob Martinez", "callers")


def test_demo_without_the_sandbox_says_how_to_build_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("CBPBX_CACHE", str(tmp_path))  # no chroot in there
    assert run_demo(asterisk=True) == 4
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    if os.geteuid() == 0:
        assert "dialplan/sandbox/pbx build" in err[0]
    else:
        assert "needs root" in err[0]
